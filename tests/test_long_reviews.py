"""evaluation/long_reviews.py end to end on the tiny adapter (max length 128) and synthetic long reviews."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sklearn.metrics as sk

from evaluation.long_reviews import cli, main, paired_comparison, parse_args
from inference.predictor import Predictor
from training.data import stratified_subset


def test_long_reviews_are_selected_scored_both_ways_and_reported(tiny_adapter, tmp_path, capsys):
    long_positive = ["A wonderful, moving film. " * 40 + f"Seen {i} times." for i in range(4)]
    long_negative = ["Dull, badly acted and far too long. " * 40 + f"Walked out after {i} minutes." for i in range(4)]
    short = ["Great fun.", "Awful."]
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"text": long_positive + long_negative + short, "label": [1] * 4 + [0] * 4 + [1, 0]}).to_csv(
        data, index=False
    )
    output = tmp_path / "long.json"

    report = main(
        parse_args(
            [
                "--model",
                str(tiny_adapter),
                "--data",
                str(data),
                "--limit",
                "6",
                "--device",
                "cpu",
                "--output",
                str(output),
            ]
        )
    )
    assert json.loads(output.read_text()) == report
    assert report["data"]["reviews"] == 10 and report["data"]["longer_than_max_length"] == 8
    assert report["data"]["scored"] == 6 and report["data"]["tokens_of_scored"]["median"] > 128
    assert report["windows_per_review"] > 1  # every scored review needs more than one window
    # The 6 scored reviews, scored again apart by a Predictor in each mode: the same accuracies.
    scored = stratified_subset(
        pd.DataFrame({"text": long_positive + long_negative, "label": [1] * 4 + [0] * 4}), 6, seed=0
    )
    for mode in ("truncate", "sliding"):
        predictor = Predictor.from_pretrained(tiny_adapter, device="cpu", long_reviews=mode)
        probabilities = predictor.predict_proba(scored["text"].tolist())
        labels, predicted = scored["label"].to_numpy(), probabilities.argmax(axis=1)
        assert report[mode]["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted)), mode
        assert report[mode]["f1"] == pytest.approx(sk.f1_score(labels, predicted, zero_division=0)), mode
        # The tiny model is near chance, so accuracy alone would miss swapped labels; its ranking would not.
        assert report[mode]["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, probabilities[:, 1])), mode
        assert report[mode]["reviews_per_second"] > 0
    paired = report["paired"]
    assert sum(paired[key] for key in ("both_right", "both_wrong", "only_truncate_right", "only_sliding_right")) == 6

    assert cli(["--model", str(tiny_adapter), "--data", str(data), "--device", "cpu", "--output", str(output)]) == 0
    assert "8 of 10 reviews exceed 128 tokens" in capsys.readouterr().out


def test_too_few_long_reviews_is_an_error_not_a_traceback(tiny_adapter, tmp_path, capsys):
    data = tmp_path / "short.csv"
    pd.DataFrame({"text": ["Great fun.", "Awful."], "label": [1, 0]}).to_csv(data, index=False)
    assert cli(["--model", str(tiny_adapter), "--data", str(data), "--output", str(tmp_path / "x.json")]) == 2
    assert "too few reviews" in capsys.readouterr().err


def test_paired_comparison_counts_disagreements():
    import numpy as np

    labels = np.array([1, 1, 0, 0])
    truncate = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=float)  # right, wrong, right, wrong
    sliding = np.array([[0, 1], [0, 1], [0, 1], [0, 1]], dtype=float)  # right, right, wrong, wrong
    paired = paired_comparison(labels, truncate, sliding)
    assert (
        paired["both_right"],
        paired["both_wrong"],
        paired["only_truncate_right"],
        paired["only_sliding_right"],
    ) == (1, 1, 1, 1)
    assert paired["accuracy_difference_sliding_minus_truncate"] == 0.0 and paired["mcnemar_exact_p"] == 1.0


def test_taking_turns_keeps_each_reviews_logits_in_order(tiny_adapter):
    import numpy as np

    from evaluation.long_reviews import score_interleaved
    from inference.predictor import Predictor

    predictors = {
        mode: Predictor.from_pretrained(tiny_adapter, device="cpu", precision="fp32", long_reviews=mode)
        for mode in ("truncate", "sliding")
    }
    texts = ["Great fun. " * (20 * i + 1) for i in range(5)] + ["Awful. " * (30 * i + 1) for i in range(5)]
    results = score_interleaved(predictors, texts, batch_size=4, chunk=3)
    for mode, predictor in predictors.items():
        assert np.allclose(results[mode]["logits"], predictor.predict_logits(texts), atol=1e-5)
        assert results[mode]["seconds"] > 0 and results[mode]["cpu_seconds"] > 0
