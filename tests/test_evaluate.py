"""evaluation/evaluate.py end to end on the tiny adapter, and the metric functions on known answers."""

from __future__ import annotations

import datetime
import json
import shlex

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as sk

from evaluation.evaluate import cli, main, parse_args
from inference.predictor import Predictor
from training.data import stratified_subset
from training.metrics import classification_metrics, expected_calibration_error, softmax


def test_report_plots_and_recorded_metrics(tiny_adapter, small_imdb, tmp_path, tmp_path_factory):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    out = tmp_path / "evaluation"
    arguments = ["--model", str(adapter), "--data", str(small_imdb), "--limit", "60", "--output-dir", str(out)]
    report = main(parse_args([*arguments, "--record"]))
    metrics = report["metrics"]
    assert report["data"]["num_examples"] == 60
    # The same 60 reviews scored apart: the Predictor as a user loads it, scikit-learn's metrics.
    sample = stratified_subset(pd.read_parquet(small_imdb / "test.parquet"), 60, seed=0)
    reference = Predictor.from_pretrained(adapter, device="cpu")
    probabilities = reference.predict_proba(sample["text"].tolist())
    labels, predicted = sample["label"].to_numpy(), probabilities.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert metrics["precision"] == pytest.approx(sk.precision_score(labels, predicted, zero_division=0))
    assert metrics["recall"] == pytest.approx(sk.recall_score(labels, predicted))
    assert metrics["f1"] == pytest.approx(sk.f1_score(labels, predicted))
    assert metrics["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, probabilities[:, 1]))
    assert metrics["confusion_matrix"] == sk.confusion_matrix(labels, predicted).tolist()
    assert np.array(metrics["confusion_matrix"]).sum() == 60
    assert sum(b["count"] for b in report["reliability_bins"]) == 60
    assert json.loads((out / "report.json").read_text())["metrics"] == metrics
    for name in ("confusion_matrix", "roc_curve", "reliability_diagram"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = json.loads((adapter / "metrics.json").read_text())
    assert recorded["test"]["accuracy"] == metrics["accuracy"] and "validation" in recorded
    # The record says how its figures were made and where: the temperature and precision, the raw softmax's
    # calibration beside the served one's, the command word for word, when and on what.
    test = recorded["test"]
    assert (test["temperature"], test["numeric_precision"]) == (reference.temperature, reference.precision)
    raw = report["calibration"]["uncalibrated"]
    assert test["uncalibrated"] == {key: raw[key] for key in ("temperature", "expected_calibration_error", "log_loss")}
    assert test["run"]["command"] == shlex.join(["python", "evaluation/evaluate.py", *arguments, "--record"])
    assert datetime.datetime.fromisoformat(test["run"]["date"]).tzinfo is not None
    assert test["run"]["machine"].startswith(("CPU: ", "GPU: ")) and test["run"] == report["run"]
    card = (adapter / "README.md").read_text()
    assert "| test | 60 | " in card and card.split("| test | 60 | ")[1].split("\n")[0].endswith(
        f"| {test['temperature']:.3f} | {reference.precision} |"
    )


def test_calibration_is_reported_before_and_after_with_the_same_labels(tiny_adapter, small_imdb, tmp_path, capsys):
    import shutil

    from training.model import write_calibration

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    write_calibration(adapter, {"temperature": 0.5})  # sharpens the tiny model's timid probabilities
    out = tmp_path / "evaluation"
    assert cli(["--model", str(adapter), "--data", str(small_imdb), "--limit", "60", "--output-dir", str(out)]) == 0
    assert "with temperature 0.500" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    before, after = report["calibration"]["uncalibrated"], report["calibration"]["calibrated"]
    assert (before["temperature"], after["temperature"], report["model"]["temperature"]) == (1.0, 0.5, 0.5)
    assert report["metrics"]["temperature"] == 0.5  # the headline figures are the scaled ones, and say so
    # One scalar temperature never changes a predicted label: accuracy is the same on both sides.
    assert before["accuracy"] == after["accuracy"] == report["metrics"]["accuracy"]
    assert after["expected_calibration_error"] == report["metrics"]["expected_calibration_error"]
    assert before["log_loss"] != after["log_loss"]
    assert after["reliability_bins"] == report["reliability_bins"]
    assert sum(b["count"] for b in before["reliability_bins"]) == 60


def test_labelled_file_without_labels_is_refused(tiny_adapter, tmp_path, capsys):
    path = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": ["Good.", "Bad."]}).to_csv(path, index=False)
    assert cli(["--model", str(tiny_adapter), "--data", str(path)]) == 2
    assert "no 'label' column" in capsys.readouterr().err
    path.write_text("text,label\nGood.,yes\nBad.,0\n")
    assert cli(["--model", str(tiny_adapter), "--data", str(path)]) == 2
    assert "label 'yes' not among the adapter's labels (NEGATIVE, POSITIVE)" in capsys.readouterr().err


def test_file_with_one_label_is_evaluated_without_roc_auc(tiny_adapter, tmp_path, capsys):
    path = tmp_path / "positive_only.csv"
    pd.DataFrame({"text": ["A fine film.", "Great fun."], "label": [1, 1]}).to_csv(path, index=False)
    assert cli(["--model", str(tiny_adapter), "--data", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    assert "ROC-AUC undefined (one label only)" in capsys.readouterr().out
    assert (tmp_path / "out" / "roc_curve.png").exists()


def test_metrics_on_known_answers():
    labels = np.array([1, 1, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7]])
    metrics = classification_metrics(labels, probabilities)
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["f1"] == 0.5
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]
    assert metrics["roc_auc"] == pytest.approx(0.75)


def test_calibration_error_is_zero_when_confidence_matches_accuracy():
    confidences = np.full(10, 0.8)
    correct = np.array([True] * 8 + [False] * 2)
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.9), np.array([True] * 5 + [False] * 5)) == pytest.approx(0.4)


def test_softmax_is_stable_and_normalised():
    probabilities = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(probabilities, [[1.0, 0.0], [0.5, 0.5]])


def test_precision_is_chosen_on_the_command_line_and_recorded_in_the_report(tiny_adapter, small_imdb, tmp_path):
    reports = {}
    for precision in ("bf16", "fp32"):
        out = tmp_path / precision
        arguments = ["--model", str(tiny_adapter), "--data", str(small_imdb), "--limit", "40", "--output-dir", str(out)]
        assert cli([*arguments, "--precision", precision]) == 0
        reports[precision] = json.loads((out / "report.json").read_text())
    assert (reports["bf16"]["model"]["precision"], reports["fp32"]["model"]["precision"]) == ("bf16", "fp32")
    assert [reports[name]["metrics"]["numeric_precision"] for name in ("bf16", "fp32")] == ["bf16", "fp32"]
    assert reports["bf16"]["metrics"]["num_examples"] == reports["fp32"]["metrics"]["num_examples"] == 40
