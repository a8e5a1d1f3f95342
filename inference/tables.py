"""Predictions as table rows and columns: what batch scoring writes, for the command line and the app alike.

pandas and numpy only (no torch): the app's page imports it while the model still loads.
"""

from __future__ import annotations

import pandas as pd

from training.text import verdict


def probability_column(label: str) -> str:
    """The batch-scoring column holding a label's probability: p_negative, p_positive, p_neutral, ..."""
    return f"p_{label.lower()}"


def predict_table(
    predictor, texts: list[str], batch_size: int, progress: bool, uncertain_below: float | None = None
) -> list[dict]:
    """One result row per text, in order: the top label, its confidence, one probability column per label
    (probability_column) and, with `uncertain_below`, a `verdict` (with_verdicts). Empty texts are flagged,
    not dropped. `predictor` is a Predictor or an OnnxPredictor."""
    filled = [i for i, text in enumerate(texts) if text.strip()]
    predictions = predictor.predict([texts[i] for i in filled], batch_size, progress) if filled else []
    rows = [{"predicted_label": "", "confidence": None, "error": "empty text"} for _ in texts]
    for index, prediction in zip(filled, predictions):
        rows[index] = {
            "predicted_label": prediction.label,
            "confidence": round(prediction.confidence, 6),
            **{probability_column(label): round(p, 6) for label, p in prediction.probabilities.items()},
            "error": "",
        }
    return rows if uncertain_below is None else with_verdicts(rows, uncertain_below)


def with_verdicts(rows: list[dict], uncertain_below: float) -> list[dict]:
    """Each row with a `verdict` after its confidence: the label, UNCERTAIN below `uncertain_below`, "" for an
    empty text. The app applies its slider's threshold to rows scored once."""

    def with_verdict(row: dict) -> dict:
        shown = "" if row["error"] else verdict(row["predicted_label"], row["confidence"], uncertain_below)
        items = [(key, value) for key, value in row.items() if key != "verdict"]
        at = [key for key, _ in items].index("confidence") + 1
        return dict(items[:at] + [("verdict", shown)] + items[at:])

    return [with_verdict(row) for row in rows]


def attach_predictions(frame: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """`frame`'s columns followed by the prediction columns of `rows` (one row each, in order). Columns from an
    earlier run's output are replaced, so a results file can be scored again."""
    predictions = pd.DataFrame(rows)
    kept = frame.drop(columns=[column for column in predictions.columns if column in frame.columns])
    return pd.concat([kept.reset_index(drop=True), predictions], axis=1)
