"""scripts/precision_check.py: the int8 sensitivity scan runs on the tiny adapter for both backends, chooses and
verifies a scheme against the gate, and records it where 'auto' reads it; whole schemes still compare."""

from __future__ import annotations

import json
import shutil

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
            assert row["reviews"] == 16 and 0 <= row["labels_changed"] <= 16
            assert row["mean_kl"] >= 0 and row["max_abs_logit_change"] >= 0 and row["reviews_per_s"] > 0


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
    assert record["validation"]["reviews"] == 30 and record["fp32"]["accuracy"] >= 0


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
    assert all(0 <= row["labels_changed"] <= 12 and 0 <= row["accuracy"] <= 1 for row in record["schemes"])
    assert not (tiny_adapter / "int8.json").exists()  # comparing records nothing in the adapter


def test_the_feed_forward_output_projection_is_found_in_both_architectures():
    found = precision_check.feed_forward_output
    assert found("bert.encoder.layer.3.output.dense") and found("distilbert.transformer.layer.1.ffn.lin2")
    assert not found("bert.encoder.layer.3.attention.output.dense") and not found("ffn.lin1")
