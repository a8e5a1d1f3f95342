"""Temperature scaling: the fit on synthetic logits, at the end of training, and for an existing adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.metrics import calibration_record, fit_temperature, softmax, temperature_nll


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


def test_fit_refuses_mismatched_input():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.zeros(2))


def test_training_saves_the_temperature_with_the_adapter(tiny_adapter, small_imdb):
    from inference.predictor import Predictor

    calibration = json.loads((tiny_adapter / "calibration.json").read_text())
    assert calibration["temperature"] > 0
    assert calibration["method"] == "temperature scaling (Guo et al., 2017)"
    assert calibration["fitted_on"] == "validation split, n=40"
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    metrics = json.loads((tiny_adapter / "metrics.json").read_text())
    assert metrics["calibration"] == calibration
    predictor = Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32")
    assert predictor.temperature == pytest.approx(calibration["temperature"])


def test_calibrate_rebuilds_the_validation_split_of_an_existing_adapter(tiny_adapter, tmp_path, capsys, opened_tables):
    from evaluation.calibrate import cli

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    trained = json.loads((adapter / "calibration.json").read_text())
    (adapter / "calibration.json").unlink()  # as for an adapter trained before calibration existed

    assert cli(["--model", str(adapter), "--device", "cpu"]) == 0
    assert "Temperature" in capsys.readouterr().out
    refitted = json.loads((adapter / "calibration.json").read_text())
    assert refitted["fitted_on"] == "validation split, n=40"
    # Same split and the same model (merged fp32 here, the Trainer's unmerged one there): the same fit.
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
