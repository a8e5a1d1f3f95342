"""Any label set, end to end on the tiny DistilBERT: four named star bands and three numbered labels are
trained, evaluated, predicted, explained and reloaded; bad label sets are refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import tiny_train_config

STARS = ("terrible", "poor", "good", "excellent")  # scripts/star_ratings.py's bands, in --labels order
BANDS = {1: "terrible", 2: "terrible", 3: "poor", 4: "poor", 7: "good", 8: "good", 9: "excellent", 10: "excellent"}


def rated_sample(imdb_dir: Path, split: str, per_label: int, label_of) -> pd.DataFrame:
    frame = pd.read_parquet(imdb_dir / f"{split}.parquet", columns=["text", "rating"])
    frame["band"] = frame["rating"].map(label_of)
    return frame.groupby("band", group_keys=False).sample(per_label, random_state=0).sample(frac=1, random_state=0)


@pytest.fixture(scope="session")
def stars_data(tmp_path_factory, imdb_dir) -> Path:
    """Four named labels in columns `review` and `stars` (not text/label): 60 training, 15 test reviews each."""
    folder = tmp_path_factory.mktemp("stars")
    for split, size in (("train", 60), ("test", 15)):
        frame = rated_sample(imdb_dir, split, size, BANDS.get)
        frame.rename(columns={"text": "review", "band": "stars"})[["review", "stars"]].to_parquet(
            folder / f"{split}.parquet"
        )
    return folder


@pytest.fixture(scope="session")
def numbered_data(tmp_path_factory, imdb_dir) -> Path:
    """Three whole-number labels 1, 2, 3 (low, middling, high ratings) in the usual text/label columns."""
    folder = tmp_path_factory.mktemp("numbered")
    for split, size in (("train", 60), ("test", 15)):
        frame = rated_sample(imdb_dir, split, size, lambda rating: 1 if rating <= 2 else 2 if rating <= 8 else 3)
        frame.rename(columns={"band": "label"})[["text", "label"]].to_parquet(folder / f"{split}.parquet")
    return folder


@pytest.fixture(scope="session")
def stars_adapter(tmp_path_factory, tiny_distilbert, stars_data) -> Path:
    from training.train import main

    folder = tmp_path_factory.mktemp("stars_run")
    config = tiny_train_config(
        tiny_distilbert,
        stars_data,
        folder,
        text_column="review",
        label_column="stars",
        labels=",".join(STARS),
        report_to="none",
    )
    main(config)
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def numbered_adapter(tmp_path_factory, tiny_distilbert, numbered_data) -> Path:
    from training.train import main

    folder = tmp_path_factory.mktemp("numbered_run")
    config = tiny_train_config(tiny_distilbert, numbered_data, folder, class_weights="balanced", report_to="none")
    main(config)
    return Path(config.output_dir)


# ----------------------------------------------------------------------------- training and loading


@pytest.mark.parametrize(
    ("adapter", "labels"), [("stars_adapter", STARS), ("numbered_adapter", ("1", "2", "3"))], ids=["stars", "numbered"]
)
def test_labels_travel_in_the_adapter_and_reload_with_identical_logits(adapter, labels, request, tiny_distilbert):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from inference.predictor import Predictor
    from training.base import label_maps, load_tokenizer
    from training.model import SentimentConfig, load_classifier

    folder = request.getfixturevalue(adapter)
    assert SentimentConfig.load(folder).labels == labels
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["label"] for row in metrics["validation"]["per_label"]] == list(labels)
    assert np.array(metrics["validation"]["confusion_matrix"]).shape == (len(labels), len(labels))
    assert sum(metrics["training"]["label_counts"].values()) == 240 * len(labels) // 4

    exact, tokenizer, _ = load_classifier(folder, merge=False)
    assert exact.config.id2label == dict(enumerate(labels)) and exact.config.num_labels == len(labels)
    batch = tokenizer(["A fine film.", "Dull and far too long."], padding=True, return_tensors="pt")
    again, _, _ = load_classifier(folder, merge=False)
    with torch.no_grad():
        expected = exact(**batch).logits
        assert expected.shape == (2, len(labels))
        assert torch.equal(again(**batch).logits, expected)  # reloaded: identical logits

    # Plain PEFT: the base with the labels from the adapter's record, then the adapter.
    recorded = json.loads((folder / "sentiment_config.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_distilbert), **label_maps(recorded))
    plain = PeftModel.from_pretrained(base, folder).eval()
    assert plain.config.id2label == dict(enumerate(labels))
    with torch.no_grad():
        assert torch.equal(
            plain(
                **load_tokenizer(str(folder))(
                    ["A fine film.", "Dull and far too long."], padding=True, return_tensors="pt"
                )
            ).logits,
            expected,
        )

    predictor = Predictor.from_pretrained(folder, device="cpu")
    logits = predictor.predict_logits(["A fine film.", "Dull and far too long."])
    assert np.allclose(logits, expected.numpy(), atol=1e-5)  # merged LoRA: the same up to rounding
    prediction = predictor.predict_one("A fine film.")
    assert list(prediction.probabilities) == list(labels) and prediction.label in labels
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)


def test_class_weights_are_inverse_frequency_and_recorded(numbered_adapter):
    from training.train import balanced_class_weights

    assert balanced_class_weights([0, 0, 0, 1], 2) == pytest.approx([4 / 6, 4 / 2])
    training = json.loads((numbered_adapter / "metrics.json").read_text())["training"]
    assert set(training["class_weights"]) == {"1", "2", "3"}  # balanced data: each about 1
    assert all(weight == pytest.approx(1.0, abs=0.1) for weight in training["class_weights"].values())


def test_the_weighted_loss_is_the_hand_computed_one_and_scales_with_the_steps_reviews():
    import torch

    from training.train import WeightedCrossEntropy

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5], [0.2, 0.1]])
    labels = torch.tensor([0, 0, 0, 1])  # imbalanced: three of label 0, one of label 1
    weights = [4 / 6, 4 / 2]
    by_hand = sum(weights[y] * -torch.log_softmax(logits[i], -1)[y] for i, y in enumerate(labels.tolist())) / 4
    loss = WeightedCrossEntropy(weights)({"logits": logits}, labels)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    unweighted = torch.nn.functional.cross_entropy(logits, labels)
    assert abs(loss.item() - unweighted.item()) > 0.05  # the weights change the loss on this batch
    # Two processes: the Trainer passes the step's reviews on both (8) and multiplies each process's loss by 2.
    assert (
        2 * WeightedCrossEntropy(weights)({"logits": logits}, labels, num_items_in_batch=8)
    ).item() == pytest.approx(loss.item(), rel=1e-6)


def test_balanced_class_weights_reach_the_trainers_loss(tiny_distilbert, small_imdb, tmp_path, monkeypatch):
    import pandas as pd

    from tests.conftest import tiny_train_config
    from training import train

    train_frame = pd.read_parquet(small_imdb / "train.parquet")
    negatives, positives = train_frame[train_frame.label == 0], train_frame[train_frame.label == 1]
    imbalanced = tmp_path / "imbalanced"
    imbalanced.mkdir()
    pd.concat([negatives, positives.head(len(positives) // 3)]).to_parquet(imbalanced / "train.parquet")
    calls = []

    class Recording(train.WeightedCrossEntropy):
        def __call__(self, outputs, labels, num_items_in_batch=None):
            calls.append((self.weights.tolist(), num_items_in_batch))
            return super().__call__(outputs, labels, num_items_in_batch)

    monkeypatch.setattr(train, "WeightedCrossEntropy", Recording)
    config = tiny_train_config(tiny_distilbert, imbalanced, tmp_path, class_weights="balanced", max_steps=2)
    train.main(dataclasses.replace(config, report_to="none", eval_steps=2, logging_steps=1))
    assert calls and all(number is not None for _, number in calls)  # the Trainer's count reaches the loss
    weights = calls[0][0]
    assert weights[1] > 1.5 > 1 > weights[0]  # the rarer label weighs more


def test_report_to_and_its_checks():
    from training.config import TrainConfig, installed
    from training.train import report_to

    assert report_to("none") == "none" and report_to("mlflow") == ["mlflow"]
    assert report_to("tensorboard") == (["tensorboard"] if installed("tensorboard") else "none")
    if not installed("wandb"):
        assert any("pip install wandb" in problem for problem in TrainConfig(report_to="wandb").problems())


def test_the_model_card_is_written_from_the_records(stars_adapter, stars_data, tmp_path):
    import shutil

    import yaml

    from evaluation.evaluate import cli

    card = (stars_adapter / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft" and front["pipeline_tag"] == "text-classification"
    assert front["base_model"] and front["datasets"]
    (result,) = front["model-index"][0]["results"]
    assert result["dataset"]["split"] == "validation"
    assert {metric["type"] for metric in result["metrics"]} >= {"accuracy", "f1"}
    assert all(f"| {label} |" in card for label in STARS)
    assert "python training/train.py" in card and "--label-column stars" in card

    adapter = tmp_path / "adapter"
    shutil.copytree(stars_adapter, adapter)
    arguments = ["--model", str(adapter), "--data", str(stars_data), "--text-column", "review"]
    assert cli([*arguments, "--label-column", "stars", "--output-dir", str(tmp_path / "out"), "--record"]) == 0
    card = (adapter / "README.md").read_text()
    splits = [r["dataset"]["split"] for r in yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]]
    assert splits == ["validation", "test"]
    assert "evaluation/confusion_matrix.png" in card and (adapter / "evaluation" / "confusion_matrix.png").exists()


def test_a_hand_written_card_is_left_alone(tmp_path):
    import shutil

    from training.model_card import write_model_card
    from training.paths import DEFAULT_MODEL_DIR

    adapter = tmp_path / "adapter"
    shutil.copytree(DEFAULT_MODEL_DIR, adapter)
    (adapter / "README.md").write_text("# My own card\n")  # no mark of the generator
    assert not write_model_card(adapter)
    assert (adapter / "README.md").read_text() == "# My own card\n"
    assert write_model_card(adapter, replace=True)  # training replaces it on purpose
    assert (adapter / "README.md").read_text().startswith("---\nlibrary_name: peft")


# ----------------------------------------------------------------------------- evaluation, prediction, explanation


def test_evaluation_reports_every_label(stars_adapter, stars_data, tmp_path, capsys):
    from evaluation.evaluate import cli

    out = tmp_path / "out"
    arguments = ["--model", str(stars_adapter), "--data", str(stars_data), "--output-dir", str(out)]
    assert cli([*arguments, "--text-column", "review", "--label-column", "stars", "--device", "cpu"]) == 0
    assert "macro F1" in capsys.readouterr().out
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    assert metrics["labels"] == list(STARS) and metrics["num_examples"] == 60
    assert np.array(metrics["confusion_matrix"]).shape == (4, 4) and np.array(metrics["confusion_matrix"]).sum() == 60
    assert metrics["f1"] == metrics["macro_f1"] and 0 <= metrics["roc_auc"] <= 1
    assert all((out / f"{name}.png").exists() for name in ("confusion_matrix", "roc_curve", "reliability_diagram"))


def test_evaluation_names_a_label_the_adapter_does_not_know(stars_adapter, tmp_path, capsys):
    from evaluation.evaluate import cli

    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["Great.", "Awful.", "Fine."], "stars": ["excellent", "awful", "good"]}).to_csv(path)
    arguments = ["--model", str(stars_adapter), "--data", str(path), "--text-column", "review"]
    assert cli([*arguments, "--label-column", "stars"]) == 2
    error = capsys.readouterr().err
    assert "label 'awful' not among the adapter's labels (terrible, poor, good, excellent)" in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error


def test_batch_scoring_writes_one_probability_column_per_label(stars_adapter, stars_data, tmp_path):
    from inference.predict import cli

    output = tmp_path / "scored.csv"
    file = ["--file", str(stars_data / "test.parquet"), "--text-column", "review", "--output", str(output)]
    assert cli(["--model", str(stars_adapter), *file, "--uncertain-below", "0.9", "--device", "cpu"]) == 0
    scored = pd.read_csv(output)
    columns = [f"p_{label}" for label in STARS]
    assert set(columns) <= set(scored.columns) and np.allclose(scored[columns].sum(axis=1), 1, atol=1e-5)
    assert set(scored["predicted_label"]) <= set(STARS)
    # The tiny model is unsure of everything: below 0.9 every verdict is UNCERTAIN.
    assert (scored["verdict"] == "UNCERTAIN").all()


def test_sliding_windows_and_calibration_work_for_four_labels(stars_adapter):
    from inference.predictor import Predictor

    review = "A slow start. " * 300 + "In the end a wonderful, moving film."
    sliding = Predictor.from_pretrained(stars_adapter, device="cpu", long_reviews="sliding")
    scaled = Predictor(sliding.backend, temperature=2.0)  # the same loaded model, another temperature
    logits = sliding.predict_logits([review])
    assert logits.shape == (1, 4)
    probabilities = scaled.predict_proba([review])
    assert probabilities.shape == (1, 4) and probabilities.sum() == pytest.approx(1.0)
    assert probabilities.argmax() == logits.argmax()


def test_explanations_attribute_the_predicted_label_against_the_others(stars_adapter):
    from inference.explain import encode_with_words, padded_baseline
    from inference.predictor import Predictor

    predictor = Predictor.from_pretrained(stars_adapter, device="cpu", precision="fp32")
    text = "A wonderful, moving film with a dull middle."
    explanation = predictor.explain(text, n_steps=16)
    assert explanation.towards == explanation.label and explanation.away == "the other labels"
    assert explanation.target.startswith(f"logit({explanation.label}) - mean logit of the other 3 labels")

    # The target recomputed here, from the logits at the input (the Predictor's own pass) and at the baseline
    # (the review's tokens all [PAD]), for the label the logits predict: attributing any other label's logit
    # gives another difference.
    at_input = predictor.predict_logits([text])[0]
    review = encode_with_words(predictor.tokenizer, text, predictor.config.max_length, predictor.config.truncation)
    baseline_ids = padded_baseline(review.token_ids, review.content, predictor.tokenizer.pad_token_id)
    with torch.no_grad():
        at_baseline = predictor.model(input_ids=torch.tensor([baseline_ids])).logits[0].double().numpy()
    predicted = int(at_input.argmax())

    def target(logits, label):  # logit(label) - the mean logit of the other labels
        return logits[label] - np.delete(logits, label).mean()

    expected = target(at_input, predicted) - target(at_baseline, predicted)
    assert predictor.labels[predicted] == explanation.label
    # The tiny model's logits barely move (this difference is about 5e-5), so the tolerances are relative.
    assert explanation.prediction_minus_baseline == pytest.approx(expected, rel=0.01)
    # Completeness against that recomputed difference: the words' scores add up to it, within 1%.
    total = sum(word.score for word in explanation.words)
    assert total == pytest.approx(expected, abs=0.01 * abs(expected))
    others = [target(at_input, k) - target(at_baseline, k) for k in range(4) if k != predicted]
    assert min(abs(other - expected) for other in others) > 0.05 * abs(expected), (expected, others)


# ----------------------------------------------------------------------------- bad label sets


def run_train(arguments: list[str], capsys) -> str:
    from training.train import run

    assert run(arguments) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    return error


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["good", "good", "bad", "bad", "fine"], "too few for 'fine' (1)"),
        (["good"] * 4, "holds one label only ('good')"),
        (["good", "", "bad", "bad"], "1 empty label cell (row 2)"),
        ([f"label{i}" for i in range(101) for _ in range(2)], "101 different labels"),
    ],
    ids=["one-review", "one-label", "empty-cell", "too-many"],
)
def test_bad_label_sets_are_refused_in_one_line(labels, message, tiny_distilbert, tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"Review {i}" for i in range(len(labels))], "label": labels}).to_csv(data, index=False)
    arguments = ["--base-model", str(tiny_distilbert), "--data", str(data), "--output-dir", str(tmp_path / "a")]
    assert message in run_train([*arguments, "--results-dir", str(tmp_path / "r")], capsys)


def test_labels_given_must_cover_the_data(tiny_distilbert, tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["pos", "neg", "pos", "meh"]}).to_csv(data, index=False)
    arguments = ["--base-model", str(tiny_distilbert), "--data", str(data), "--labels", "neg,pos"]
    error = run_train([*arguments, "--output-dir", str(tmp_path / "a"), "--results-dir", str(tmp_path / "r")], capsys)
    assert "label 'meh' not among --labels (neg, pos)" in error


def test_label_names_from_the_data():
    from training.data import label_ids, label_names

    assert label_names([0, 1, 1]) == ("NEGATIVE", "POSITIVE")  # IMDb's 0/1 keep the shipped names
    assert label_names([10, 2, 1]) == ("1", "2", "10")  # numbers in numeric order
    assert label_names(["pos", "neg", "neutral"]) == ("neg", "neutral", "pos")
    assert label_names(["pos"], ["neg", "pos"]) == ("neg", "pos")
    assert list(label_ids([0, 1], ("NEGATIVE", "POSITIVE"), "x")) == [0, 1]  # by position
    assert list(label_ids([0, 2], ("neg", "neutral", "pos"), "x")) == [0, 2]
    assert list(label_ids([3, 1], ("1", "3"), "x")) == [1, 0]  # numbers as names, never as positions


# ----------------------------------------------------------------------------- metrics and calibration


def test_multiclass_metrics_on_known_answers():
    from sklearn.metrics import f1_score, roc_auc_score

    from training.metrics import classification_metrics

    labels = np.array([0, 1, 2, 2, 1, 0])
    probabilities = np.array(
        [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]]
    )
    metrics = classification_metrics(labels, probabilities, ("a", "b", "c"))
    predictions = probabilities.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == metrics["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(labels, predictions, average="weighted"))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert metrics["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert [row["support"] for row in metrics["per_label"]] == [2, 2, 2]


def test_calibration_of_four_labels_keeps_only_a_temperature_that_helps_held_out_reviews():
    from training.metrics import FITTED_TEMPERATURE_BOUNDS, calibration_record, temperature_nll, top_label_ece

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 150)
    small = calibration_record(rng.normal(size=(150, 4)), labels)
    assert small["temperature"] == 1.0 and "fewer than the 200" in small["reason"] and small["held_out_check"] is None

    # Logits that carry no information, far too sure of themselves: the fit flattens them as far as it may,
    # and the held-out check keeps that, because it helps reviews the fit never saw (here: new ones too).
    def noise(count):
        return rng.normal(scale=8, size=(count, 4)), rng.integers(0, 4, count)

    record = calibration_record(*noise(400))
    low, high = FITTED_TEMPERATURE_BOUNDS
    assert high * 0.9 <= record["temperature"] <= high
    assert record["nll_after"] < record["nll_before"] and record["ece_after"] < record["ece_before"]
    assert all(low <= fold <= high for fold in record["held_out_check"]["fold_temperatures"])
    fresh_logits, fresh_labels = noise(4000)
    assert temperature_nll(fresh_logits, fresh_labels, record["temperature"]) < temperature_nll(
        fresh_logits, fresh_labels, 1.0
    )
    assert top_label_ece(fresh_logits, fresh_labels, record["temperature"]) < top_label_ece(fresh_logits, fresh_labels)


def test_the_shipped_card_is_what_its_records_write():
    # The shipped card says nothing its records (and its hand-written card_notes.md) do not: regenerating it
    # from trained_model/ gives the file as committed.
    from training.model_card import NOTES_FILE, is_generated, model_card
    from training.paths import DEFAULT_MODEL_DIR

    assert is_generated(DEFAULT_MODEL_DIR)
    card = (DEFAULT_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    assert card == model_card(DEFAULT_MODEL_DIR)
    assert (DEFAULT_MODEL_DIR / NOTES_FILE).read_text(encoding="utf-8").strip() in card
    assert "| test | 25000 | 0.9322 | 0.9334 |" in card
