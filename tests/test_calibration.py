"""Temperature scaling: the fit on synthetic logits, at the end of training, and for an existing adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.metrics import calibration_record, fit_temperature, softmax, temperature_nll, top_label_ece


def synthetic_logits(true_temperature: float, n: int = 20000, seed: int = 0):
    """Labels drawn from softmax(logits / true_temperature): that temperature calibrates them exactly."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 4.0, size=n)
    logits = np.stack([-margin / 2, margin / 2], axis=1)
    labels = (rng.random(n) < softmax(logits / true_temperature)[:, 1]).astype(int)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(true_temperature):
    logits, labels = synthetic_logits(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_fit_minimises_the_nll_and_never_changes_a_label():
    logits, labels = synthetic_logits(1.8, n=3000, seed=1)
    temperature = fit_temperature(logits, labels)
    best = temperature_nll(logits, labels, temperature)
    assert best < temperature_nll(logits, labels, 1.0)
    assert best <= min(temperature_nll(logits, labels, temperature * f) for f in (0.9, 1.1))
    assert (softmax(logits / temperature).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_already_calibrated_logits_keep_a_temperature_near_one():
    logits, labels = synthetic_logits(1.0, n=5000, seed=2)
    record = calibration_record(logits, labels)
    assert record["temperature"] == pytest.approx(1.0, abs=0.08)
    assert record["nll_after"] <= record["nll_before"]
    assert record["fitted_on"] == "validation split, n=5000"


def test_overconfident_logits_are_softened_and_calibration_improves():
    logits, labels = synthetic_logits(3.0, n=4000, seed=3)
    record = calibration_record(logits, labels)
    assert record["temperature"] > 2.5
    assert record["ece_after"] < record["ece_before"] / 2 and record["nll_after"] < record["nll_before"]
    assert set(record) >= {"temperature", "method", "fitted_on", "nll_before", "nll_after", "ece_before", "ece_after"}


# The held-out check on 20 draws of a 200-review split (the smallest it fits on). Logits drawn calibrated give
# a fit nothing to gain: a kept T only follows the draw's noise. Fitting always would keep one on every draw;
# the cross-fitted check kept one on 4 of 20, the single half-split check it replaced on 11.
DRAWS = range(20)


def test_the_check_keeps_t_1_for_most_splits_that_need_no_temperature():
    records = [calibration_record(*synthetic_logits(1.0, n=200, seed=seed)) for seed in DRAWS]
    kept_one = [record for record in records if record["temperature"] == 1.0]
    assert len(kept_one) >= 14, [round(record["temperature"], 2) for record in records]
    for record in kept_one:  # nothing kept: the "after" figures are T = 1's, and the reason names the check
        assert (record["ece_after"], record["nll_after"]) == (record["ece_before"], record["nll_before"])
        assert "held-out" in record["reason"]


def test_a_kept_temperature_helps_new_reviews_and_its_figures_are_held_out():
    fresh_logits, fresh_labels = synthetic_logits(2.0, n=20000, seed=99)  # new reviews from the same model
    kept = 0
    for seed in DRAWS:
        logits, labels = synthetic_logits(2.0, n=200, seed=seed)
        record = calibration_record(logits, labels)
        if record["temperature"] == 1.0:
            continue
        kept += 1
        temperature = record["temperature"]
        assert top_label_ece(fresh_logits, fresh_labels, temperature) < top_label_ece(fresh_logits, fresh_labels)
        assert temperature_nll(fresh_logits, fresh_labels, temperature) < temperature_nll(fresh_logits, fresh_labels, 1)
        # The "after" log loss comes from reviews each fit never saw, so it is above the whole split's at the
        # refitted T, the minimum that fit found on the very reviews it scores.
        assert record["nll_after"] > temperature_nll(logits, labels, temperature)
        assert record["nll_after"] < record["nll_before"] and record["ece_after"] < record["ece_before"]
    assert kept >= 17  # 19 of 20 measured: the check does not throw away a temperature the model needs


def test_fit_refuses_mismatched_input():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.zeros(2))


@pytest.fixture(scope="module")
def calibrated_adapter(tmp_path_factory, small_imdb) -> Path:
    """An adapter trained by training/train.py on half of small_imdb's 400 reviews, the other half its validation
    split: 200 reviews, enough for a temperature fit (the shared tiny adapter's 40 are not). Its base is the tiny
    DistilBERT with weights drawn ten times wider: the shared one's logits barely move from review to review
    (probabilities 0.5, nothing to calibrate); these vary and are over-confident, so a fitted T must soften them."""
    from tests.conftest import tiny_train_config
    from training.tiny_model import TINY_DISTILBERT_SHAPE, random_distilbert
    from training.train import main

    folder = tmp_path_factory.mktemp("calibrated_run")
    base = random_distilbert(folder / "base", dict(TINY_DISTILBERT_SHAPE, initializer_range=0.2))
    config = tiny_train_config(base, small_imdb, folder, validation_fraction=0.5, report_to="none")
    main(config)
    return Path(config.output_dir)


def test_training_keeps_a_fitted_temperature_and_the_predictor_applies_it(calibrated_adapter):
    from inference.predictor import Predictor

    calibration = json.loads((calibrated_adapter / "calibration.json").read_text())
    assert calibration["method"] == "temperature scaling (Guo et al., 2017)"
    assert calibration["fitted_on"] == "validation split, n=200"
    # The fit was kept: the held-out check passed, and what the record reports is what it measured.
    temperature = calibration["temperature"]
    assert temperature > 1.5 and calibration["reason"] is None, calibration  # softened
    check = calibration["held_out_check"]
    assert (calibration["nll_after"], calibration["ece_after"]) == (check["nll_after"], check["ece_after"])
    assert calibration["nll_after"] < calibration["nll_before"] and calibration["ece_after"] < calibration["ece_before"]
    metrics = json.loads((calibrated_adapter / "metrics.json").read_text())
    assert metrics["calibration"] == calibration

    predictor = Predictor.from_pretrained(calibrated_adapter, device="cpu", precision="fp32")
    assert predictor.temperature == temperature
    texts = ["A wonderful, moving film.", "Dull, long and badly acted.", "It was fine."]
    logits = predictor.predict_logits(texts)
    np.testing.assert_allclose(predictor.predict_proba(texts), softmax(logits / temperature), atol=1e-6)
    raw = Predictor.from_pretrained(calibrated_adapter, device="cpu", precision="fp32", calibrated=False)
    assert raw.temperature == 1.0
    assert np.abs(raw.predict_proba(texts) - predictor.predict_proba(texts)).max() > 1e-3


def test_training_on_too_few_validation_reviews_keeps_t_1_and_says_why(tiny_adapter):
    from inference.predictor import Predictor

    calibration = json.loads((tiny_adapter / "calibration.json").read_text())
    assert calibration["fitted_on"] == "validation split, n=40"
    assert calibration["temperature"] == 1.0 and "40 validation reviews, fewer than the 200" in calibration["reason"]
    assert Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32").temperature == 1.0


def test_calibrate_rebuilds_the_validation_split_of_an_existing_adapter(
    calibrated_adapter, tmp_path, capsys, opened_tables
):
    from evaluation.calibrate import cli

    adapter = tmp_path / "adapter"
    shutil.copytree(calibrated_adapter, adapter)
    trained = json.loads((adapter / "calibration.json").read_text())
    (adapter / "calibration.json").unlink()  # as for an adapter trained before calibration existed

    assert cli(["--model", str(adapter), "--device", "cpu"]) == 0
    assert "Temperature" in capsys.readouterr().out
    refitted = json.loads((adapter / "calibration.json").read_text())
    assert refitted["fitted_on"] == "validation split, n=200"
    # Same split and the same model (merged fp32 here, the Trainer's unmerged one there): the same fit, a kept
    # temperature (not T = 1 on both sides).
    assert trained["temperature"] != 1.0
    assert refitted["temperature"] == pytest.approx(trained["temperature"], rel=1e-3)
    assert refitted["nll_before"] == pytest.approx(trained["nll_before"], rel=1e-4)
    # Calibration is fitted on the validation split carved from train.parquet; test.parquet lies in the
    # same folder and is never opened (its reviews measure the adapter, so they must not tune it).
    assert any(path.endswith("train.parquet") for path in opened_tables)  # the spy saw the read
    assert not [path for path in opened_tables if Path(path).name.startswith("test.")], opened_tables


def test_calibrate_refuses_data_that_does_not_rebuild_the_split(tiny_adapter, small_imdb, tmp_path, capsys):
    import pandas as pd

    from evaluation.calibrate import cli

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    other = tmp_path / "other.parquet"
    pd.read_parquet(small_imdb / "train.parquet").head(100).to_parquet(other)
    assert cli(["--model", str(adapter), "--data", str(other), "--device", "cpu"]) == 2
    assert "not the data it was trained on" in capsys.readouterr().err
    assert cli(["--model", str(tmp_path / "missing")]) == 2
