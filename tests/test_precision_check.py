"""scripts/precision_check.py: the int8 sensitivity scan runs on the tiny adapter for both backends, chooses and
verifies a scheme against the gate, and records it where 'auto' reads it; whole schemes still compare."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from inference.int8 import HEAD_ROLES, LAYER_ROLES, read_int8_schemes
from scripts import precision_check


@pytest.fixture(scope="module")
def gated_adapter(tiny_adapter, small_imdb, tmp_path_factory):
    """A copy of the tiny adapter (the scan writes its int8.json) and the record of the scan run on it."""
    folder = tmp_path_factory.mktemp("gated") / "adapter"
    shutil.copytree(tiny_adapter, folder)
    output = folder.parent / "record.json"
    arguments = ["--model", str(folder), "--data", str(small_imdb), "--scan-reviews", "16"]
    arguments += ["--validation-reviews", "30", "--test-reviews", "12", "--output", str(output), "--record"]
    record = precision_check.main(arguments)
    assert json.loads(output.read_text()) == json.loads(json.dumps(record))  # what was returned was written
    return folder, record


def test_the_scan_covers_every_encoder_matrix_of_both_backends(gated_adapter):
    _, record = gated_adapter
    expected = [f"layer.{layer}.{part}" for layer in range(2) for part in LAYER_ROLES]  # the tiny DistilBERT: 2 layers
    for backend in precision_check.BACKENDS:
        rows = record[backend]["scan"]
        assert sorted(row["role"] for row in rows) == sorted(expected), backend
        for row in rows:
            assert row["reviews"] == 16 and row["reviews_per_s"] > 0
            # Each row quantized its one matrix: the probabilities moved (an fp32 build leaves them exactly as they
            # were). Only just: the tiny model's outputs barely depend on its input, so the divergence is about 1e-14
            # and the logit change rounds to 0 at the 4 decimals recorded.
            assert row["mean_kl"] > 0, (backend, row)
            consistent_with_fp32(row)


def test_the_chosen_scheme_is_verified_on_the_validation_reviews_and_recorded_in_the_adapter(gated_adapter):
    folder, record = gated_adapter
    schemes = read_int8_schemes(folder)
    assert set(schemes) == set(precision_check.BACKENDS)
    for backend, scheme in schemes.items():
        chosen = record[backend]
        assert list(scheme.keep_fp32) == chosen["keep_fp32"] and set(HEAD_ROLES) <= set(scheme.keep_fp32)
        assert chosen["validation"]["reviews"] == 30 and scheme.gate["split"] == "validation"
        # The last step is the verdict: it passed, or there was nothing left to return to fp32.
        assert scheme.passed == chosen["validation"]["passed"]
        assert scheme.passed or len(scheme.keep_fp32) == len(HEAD_ROLES) + len(record[backend]["scan"])
        steps = chosen["steps"]
        assert steps[-1]["on"] == "validation" and all(
            len(a["keep_fp32"]) <= len(b["keep_fp32"]) for a, b in zip(steps, steps[1:])
        )
        assert chosen["test"]["reviews"] == 12 and "test" in chosen["test"]["sample"].lower()
        for step in steps:
            consistent_with_fp32(step)
        # The verdict compares with fp32 on all the validation reviews, those record["fp32"] was measured on.
        assert chosen["validation"]["fp32_accuracy"] == record["fp32"]["accuracy"]
    assert record["validation"]["reviews"] == 30


def consistent_with_fp32(row: dict) -> None:
    """A row's accuracy can differ from fp32's only through the labels it changed, and its change in points says so
    (both accuracies are rounded to 4 decimals)."""
    assert abs(row["accuracy"] - row["fp32_accuracy"]) * row["reviews"] <= row["labels_changed"] + 1e-4 * row["reviews"]
    assert row["accuracy_change_points"] == pytest.approx(100 * (row["accuracy"] - row["fp32_accuracy"]), abs=0.02)


def test_agreement_on_known_logits():
    from scipy.stats import entropy

    from training.metrics import softmax

    reference = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])  # fp32: labels 0, 1, 0, 1
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.5]])  # labels 0, 0, 1, 1: two changed
    labels = np.array([0, 0, 0, 1])  # fp32 right on 3, the approximation on 3 as well
    result = precision_check.agreement(logits, reference, labels)
    assert result["reviews"] == 4 and result["labels_changed"] == 2
    assert (result["accuracy"], result["fp32_accuracy"], result["accuracy_change_points"]) == (0.75, 0.75, 0.0)
    kl = entropy(softmax(reference), softmax(logits), axis=1)  # KL(fp32 || approximation), per review
    assert result["mean_kl"] == pytest.approx(kl.mean(), rel=5e-3)  # recorded to 3 significant digits
    assert result["max_abs_logit_change"] == 1.0
    assert not result["passed"]  # half the labels changed


def test_the_sensitivity_order_puts_the_largest_divergence_first_then_changed_labels():
    rows = [
        {"role": "a", "labels_changed": 0, "mean_kl": 0.5},
        {"role": "b", "labels_changed": 2, "mean_kl": 0.1},
        {"role": "c", "labels_changed": 0, "mean_kl": 0.9},
        {"role": "d", "labels_changed": 1, "mean_kl": 0.1},
    ]
    assert precision_check.sensitivity_order(rows) == ["c", "a", "b", "d"]


def test_whole_schemes_still_compare_against_fp32(tiny_adapter, small_imdb, tmp_path):
    record = precision_check.main(
        ["--model", str(tiny_adapter), "--data", str(small_imdb), "--scan-reviews", "12", "--validation-reviews", "12"]
        + [
            "--schemes",
            "bf16,dynamic,static_minmax",
            "--calibration-reviews",
            "8",
            "--output",
            str(tmp_path / "r.json"),
        ]
    )
    assert [row["scheme"] for row in record["schemes"]] == ["bf16", "dynamic", "static_minmax"]
    for row in record["schemes"]:  # every scheme approximates fp32 on the same 12 reviews (the scan set: all 12)
        assert row["reviews"] == 12 and row["fp32_accuracy"] == record["fp32"]["accuracy"]
        assert row["mean_kl"] > 0, row
        consistent_with_fp32(row)
    assert not (tiny_adapter / "int8.json").exists()  # comparing records nothing in the adapter


def test_the_feed_forward_output_projection_is_found_in_both_architectures():
    found = precision_check.feed_forward_output
    assert found("bert.encoder.layer.3.output.dense") and found("distilbert.transformer.layer.1.ffn.lin2")
    assert not found("bert.encoder.layer.3.attention.output.dense") and not found("ffn.lin1")
