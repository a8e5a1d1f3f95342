"""A scored upload's results: its rows scored in chunks (for a progress bar), the table with a verdict per row,
the count per verdict and the confidence histogram.

pandas and numpy only: inference.tables (no torch either) does the scoring, given a loaded Predictor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from inference.tables import attach_predictions, predict_table, with_verdicts
from training.text import UNCERTAIN
from webapp.render import confidence_floor

if TYPE_CHECKING:  # imported where used: importing torch takes seconds, and the page must not wait for it
    from inference.predictor import Predictor

SCORE_CHUNK = 64  # reviews per progress-bar step
BATCH_SIZE = 32


def score_texts(
    predictor: Predictor,
    texts: list[str],
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = SCORE_CHUNK,
) -> list[dict]:
    """predict_table's rows for `texts`, in order, scored `chunk_size` at a time to report progress.

    The texts go longest first across chunks, as Predictor does within a call, so each batch still pads
    to similar lengths and chunking costs no speed (docs/speed.md).
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    rows: list[dict | None] = [None] * len(texts)
    for start in range(0, len(order), chunk_size):
        chosen = order[start : start + chunk_size]
        for index, row in zip(chosen, predict_table(predictor, [texts[i] for i in chosen], BATCH_SIZE, progress=False)):
            rows[index] = row
        if on_progress is not None:
            on_progress(min(start + chunk_size, len(texts)), len(texts))
    return rows


def results_frame(frame: pd.DataFrame, rows: list[dict], threshold: float) -> pd.DataFrame:
    """The upload's columns followed by the predictions, with a `verdict` at `threshold` after the confidence
    ("" for empty rows): inference.tables' with_verdicts and attach_predictions, as the command line writes."""
    return attach_predictions(frame, with_verdicts(rows, threshold))


def verdict_counts(results: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """Reviews per verdict (each label, UNCERTAIN, empty), with their share of all rows."""
    names = [*labels, UNCERTAIN, ""]
    counts = [int((results["verdict"] == name).sum()) for name in names]
    return pd.DataFrame(
        {
            "verdict": [name or "empty row" for name in names],
            "reviews": counts,
            "share": [count / max(len(results), 1) for count in counts],
        }
    )


def verdict_summary(results: pd.DataFrame, labels: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    """verdict_counts' rows to show (the empty rows' only when there are some) and how many reviews were scored."""
    counts = verdict_counts(results, labels)
    scored = len(results) - int(counts.loc[counts["verdict"] == "empty row", "reviews"].iloc[0])
    return counts[(counts["reviews"] > 0) | (counts["verdict"] != "empty row")], scored


def confidence_histogram(confidences, bin_width: float = 0.05, n_labels: int = 2) -> pd.DataFrame:
    """Counts of confidences in bins of `bin_width` from the N-label floor (1/N, down to a bin edge: 50% for
    two labels, 25% for four) to 100%: a top probability never goes below 1/N."""
    low = round(math.floor(round(confidence_floor(n_labels) / bin_width, 6)) * bin_width, 6)
    edges = np.round(np.arange(low, 1.0 + bin_width / 2, bin_width), 6)
    values = np.clip(
        np.asarray([value for value in confidences if value is not None and value == value], float), low, 1.0
    )
    counts, _ = np.histogram(values, bins=edges)
    return pd.DataFrame(
        {
            "confidence": [f"{low:.0%}–{high:.0%}" for low, high in zip(edges[:-1], edges[1:])],
            "low": edges[:-1],
            "high": edges[1:],
            "reviews": counts,
        }
    )
