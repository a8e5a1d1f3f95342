"""scripts/precision_check.py: every precision scheme runs on the tiny adapter and reports against fp32."""

from __future__ import annotations

from scripts import precision_check


def test_every_scheme_scores_the_validation_reviews_against_fp32(tiny_adapter, small_imdb, capsys):
    rows = precision_check.main(
        ["--model", str(tiny_adapter), "--data", str(small_imdb), "--reviews", "24", "--calibration-reviews", "8"]
    )
    assert [row["scheme"] for row in rows] == ["fp32", *precision_check.SCHEMES]
    assert rows[0]["reviews"] == 24
    for row in rows[1:]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["labels_changed_vs_fp32"] <= 24
        assert row["max_abs_logit_change"] >= 0 and row["reviews_per_s"] > 0
    assert capsys.readouterr().out.count("\n") == len(rows)  # one JSON line each


def test_the_feed_forward_output_projection_is_found_in_both_architectures():
    found = precision_check.feed_forward_output
    assert found("bert.encoder.layer.3.output.dense") and found("distilbert.transformer.layer.1.ffn.lin2")
    assert not found("bert.encoder.layer.3.attention.output.dense") and not found("ffn.lin1")
