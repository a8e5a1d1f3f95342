"""Classification metrics and temperature scaling as pure functions of labels, logits and probabilities.

Training (validation during model selection) and evaluation (the reported figures) both call
`classification_metrics`, so a validation accuracy and a test accuracy mean the same thing. Training
and evaluation/calibrate.py both fit the temperature with `calibration_record`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

CALIBRATION_BINS = 15
# The temperatures fit_temperature searches; training.model.read_calibration accepts the same range.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits. logits: (n, classes)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Equal-width confidence bins with how often the model was right in each (for the diagram and ECE)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes in the first.
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    result = []
    for i in range(bins):
        mask = index == i
        count = int(mask.sum())
        result.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": count,
                "confidence": float(confidences[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return result


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins."""
    total = len(confidences)
    if total == 0:
        return float("nan")
    return float(
        sum(
            b["count"] / total * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidences, correct, bins)
            if b["count"]
        )
    )


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, precision, recall and F1 (positive class), ROC-AUC, log loss, ECE and the confusion matrix.

    labels: (n,) of 0/1. probabilities: (n, 2), each row summing to 1.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    confidences = probabilities.max(axis=1)
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision_score(labels, predictions, zero_division=0)),
        "recall": float(recall_score(labels, predictions, zero_division=0)),
        "f1": float(f1_score(labels, predictions, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities[:, 1])) if both_classes else None,
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "expected_calibration_error": expected_calibration_error(confidences, predictions == labels),
        # Rows are true labels, columns predictions: [[TN, FP], [FN, TP]].
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]).tolist(),
        "num_examples": int(len(labels)),
    }


# ----------------------------------------------------------------------------- temperature scaling


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normaliser = (top + np.log(np.exp(scaled - top).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_normaliser - scaled[np.arange(len(scaled)), np.asarray(labels).astype(int)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on held-out data (Guo et al., 2017).

    One scalar, so the predicted label never changes, only how sure the model says it is. The NLL
    is convex in 1/T, hence unimodal in log T: a bounded Brent search over log T finds the optimum.
    logits: (n, classes); labels: (n,) class indices.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0 or len(logits) != len(labels):
        raise ValueError("fit_temperature needs logits of shape (n, classes) with n > 0 and one label per row.")
    lower, upper = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: temperature_nll(logits, labels, math.exp(log_t)),
        bounds=(lower, upper),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def calibration_record(logits: np.ndarray, labels: np.ndarray, split: str = "validation split") -> dict:
    """Fit the temperature and describe the fit: what calibration.json holds beside an adapter."""
    labels = np.asarray(labels).astype(int)
    temperature = fit_temperature(logits, labels)

    def ece(probabilities):
        return expected_calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)

    return {
        "temperature": temperature,
        "method": "temperature scaling (Guo et al., 2017)",
        "fitted_on": f"{split}, n={len(labels)}",
        "nll_before": temperature_nll(logits, labels, 1.0),
        "nll_after": temperature_nll(logits, labels, temperature),
        "ece_before": ece(softmax(logits)),
        "ece_after": ece(softmax(np.asarray(logits, dtype=np.float64) / temperature)),
    }
