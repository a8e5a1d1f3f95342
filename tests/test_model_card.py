"""training/model_card.py on records written here (no training): each row says how its probabilities were made,
the IMDb copy is named by its hub id, fields filled in after a run are marked; and the shipped adapter's records."""

from __future__ import annotations

import json

import yaml

from tests.conftest import SHIPPED_MODEL_DIR
from training.data import HUB_DATASET
from training.model_card import LOCAL_IMDB_COPY, model_card

FIGURES = {"accuracy": 0.9, "f1": 0.9, "precision": 0.9, "recall": 0.9, "roc_auc": 0.95, "log_loss": 0.3}


def write_records(folder, data: str, validation: dict, test: dict | None = None, later: dict | None = None):
    training = {"data": data, "command": "python training/train.py --recipe training/recipes/minilm-imdb.json"}
    if later:
        training["filled_in_later"] = later
    config = {"base_model": "tiny", "max_length": 64, "truncation": "head_tail", "labels": ["NEGATIVE", "POSITIVE"]}
    (folder / "sentiment_config.json").write_text(json.dumps({**config, "lora": {"rank": 4}, "training": training}))
    metrics = {"validation": validation, **({"test": test} if test else {})}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def table_row(card: str, split: str) -> list[str]:
    (row,) = [line for line in card.splitlines() if line.startswith(f"| {split} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_each_row_says_its_temperature_and_precision(tmp_path):
    validation = {**FIGURES, "expected_calibration_error": 0.05, "num_examples": 40}  # written before either was
    test = {
        **FIGURES,
        "expected_calibration_error": 0.02,
        "num_examples": 60,
        "temperature": 1.77,
        "numeric_precision": "bf16",
        "uncalibrated": {"temperature": 1.0, "expected_calibration_error": 0.05, "log_loss": 0.31},
        "data": {"source": "reviews.csv", "split": "test", "limit": None, "seed": 0},
        "run": {"command": "python evaluation/evaluate.py --record", "date": "2026-12-02", "machine": "CPU: x"},
    }
    card = model_card(write_records(tmp_path, "reviews.csv", validation, test))
    header = table_row(card, "split")
    assert header[-2:] == ["T", "run in"]
    assert table_row(card, "validation")[-2:] == ["not recorded", "not recorded"]
    assert table_row(card, "test")[-2:] == ["1.770", "bf16"]
    assert "Test, raw softmax (T = 1): calibration error 0.0500, log loss 0.3100." in card
    assert "measured on CPU: x, 2026-12-02, by `python evaluation/evaluate.py --record`" in card


def test_the_imdb_copy_is_named_by_its_hub_id_and_described(tmp_path):
    validation = {**FIGURES, "num_examples": 40, "temperature": 1.0, "numeric_precision": "fp32"}
    card = model_card(write_records(tmp_path, LOCAL_IMDB_COPY, validation))
    front = yaml.safe_load(card.split("---")[1])
    assert front["datasets"] == [HUB_DATASET]
    (result,) = front["model-index"][0]["results"]
    assert result["dataset"]["name"] == result["dataset"]["type"] == HUB_DATASET
    assert LOCAL_IMDB_COPY not in card.split("---")[1]  # a path is no hub id
    assert f"`{LOCAL_IMDB_COPY}`, a local copy of `{HUB_DATASET}`" in card
    assert "https://ai.stanford.edu/~amaas/data/sentiment/" in card
    assert table_row(card, "validation")[-2:] == ["1.000", "fp32"]


def test_fields_filled_in_after_the_run_are_marked_apart_from_its_command(tmp_path):
    validation = {**FIGURES, "num_examples": 40}
    later = {"note": "added by hand.", "recipe": "training/recipes/minilm-imdb.json (written later)"}
    card = model_card(write_records(tmp_path, LOCAL_IMDB_COPY, validation, later=later))
    recipe = card.split("## Recipe")[1].split("## Metrics")[0]
    assert "Filled in after the run (the rest of the record is the run's own): added by hand." in recipe
    assert "- `recipe`: training/recipes/minilm-imdb.json (written later)" in recipe
    assert model_card(write_records(tmp_path, LOCAL_IMDB_COPY, validation)).count("Filled in after the run") == 0


def test_the_shipped_record_keeps_the_command_that_was_run():
    # The run's own record (commit e295b57): scripts/sweep.py on the GPU machine, not the recipe command that
    # was written over it later; what was added afterwards sits apart, marked.
    training = json.loads((SHIPPED_MODEL_DIR / "sentiment_config.json").read_text())["training"]
    assert training["command"].startswith("scripts/sweep.py ")
    assert {"recipe", "padding", "attention", "group_by_length", "note"}.isdisjoint(training)
    assert {"recipe", "data", "note"} <= set(training["filled_in_later"])
    card = (SHIPPED_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    assert f"```bash\n{training['command']}\n```" in card and "Filled in after the run" in card


def test_the_shipped_test_row_says_how_it_was_measured():
    test = json.loads((SHIPPED_MODEL_DIR / "metrics.json").read_text())["test"]
    assert test["num_examples"] == 25_000 and test["data"]["limit"] is None
    assert (test["numeric_precision"], test["temperature"]) == (
        "fp32",
        json.loads((SHIPPED_MODEL_DIR / "calibration.json").read_text())["temperature"],
    )
    assert "--precision fp32" in test["run"]["command"] and "--record" in test["run"]["command"]
    assert test["uncalibrated"]["temperature"] == 1.0
    assert test["uncalibrated"]["expected_calibration_error"] > test["expected_calibration_error"]
