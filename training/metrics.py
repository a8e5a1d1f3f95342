"""Classification metrics and temperature scaling as pure functions of labels, logits and probabilities.

Training (validation during model selection) and evaluation (the reported figures) both call
`classification_metrics`, so a validation accuracy and a test accuracy mean the same thing. Training
and evaluation/calibrate.py both fit the temperature with `calibration_record`.

Importing it needs numpy alone (scikit-learn and scipy load inside the functions that use them), so the
torch-free export predictor shares `softmax` with everything else.
"""

from __future__ import annotations

import math

import numpy as np

CALIBRATION_BINS = 15
# The temperatures fit_temperature searches by default; training.model.read_calibration accepts the same range.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# What calibration_record fits within: a temperature outside it says the validation split is too small or
# too odd to trust (a quick run's 64 reviews gave T = 0.055, logits times 18, and a worse calibration error).
FITTED_TEMPERATURE_BOUNDS = (0.5, 5.0)
# The fewest validation reviews calibration_record fits a temperature on: its held-out check pools one
# 15-bin ECE over every review, and on fewer than 200 that is mostly noise.
MIN_CALIBRATION_EXAMPLES = 200
# The held-out check is cross-fitted: each fold is scaled by a temperature fitted on the other folds.
CALIBRATION_FOLDS = 5


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


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, label_names: tuple[str, ...] | list[str] | None = None
) -> dict:
    """Accuracy, precision, recall, F1, ROC-AUC, log loss, ECE and the confusion matrix, for any number of labels.

    labels: (n,) label ids. probabilities: (n, labels), each row summing to 1. `label_names` name the
    per-label rows (default: the ids).

    With two labels, precision, recall and F1 are those of label 1 (POSITIVE) and ROC-AUC ranks by its
    probability, as they always were. With more, they are the macro averages (each label counts the same)
    and ROC-AUC is one-vs-rest, macro-averaged over the labels present with and without. Every report also
    has the macro and weighted (by support) averages and a per-label table; ECE uses the top label's
    probability (its confidence) for any number of labels.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_labels = probabilities.shape[1]
    names = [str(name) for name in (label_names if label_names is not None else range(num_labels))]
    ids = list(range(num_labels))
    predictions = probabilities.argmax(axis=1)
    confidences = probabilities.max(axis=1)
    binary = num_labels == 2
    averaged = {
        average: precision_recall_fscore_support(labels, predictions, labels=ids, average=average, zero_division=0)
        for average in ("macro", "weighted")
    }
    per_label = precision_recall_fscore_support(labels, predictions, labels=ids, average=None, zero_division=0)
    if binary:
        headline = {
            "precision": float(precision_score(labels, predictions, zero_division=0)),
            "recall": float(recall_score(labels, predictions, zero_division=0)),
            "f1": float(f1_score(labels, predictions, zero_division=0)),
            "roc_auc": float(roc_auc_score(labels, probabilities[:, 1])) if len(np.unique(labels)) == 2 else None,
        }
    else:
        precision, recall, f1, _ = averaged["macro"]
        headline = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "roc_auc": one_vs_rest_auc(labels, probabilities),
        }
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        **headline,
        "log_loss": float(log_loss(labels, probabilities, labels=ids)),
        "expected_calibration_error": expected_calibration_error(confidences, predictions == labels),
        # Rows are true labels, columns predictions; with two labels [[TN, FP], [FN, TP]].
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
        "num_examples": int(len(labels)),
        "averaging": "binary (label 1, POSITIVE)" if binary else "macro",
        **{
            f"{average}_{name}": float(value)
            for average, values in averaged.items()
            for name, value in zip(("precision", "recall", "f1"), values[:3])
        },
        "labels": names,
        "per_label": [
            {
                "label": name,
                "precision": float(per_label[0][i]),
                "recall": float(per_label[1][i]),
                "f1": float(per_label[2][i]),
                "support": int(per_label[3][i]),
            }
            for i, name in enumerate(names)
        ],
    }


def one_vs_rest_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """ROC-AUC of each label against the rest (ranked by its probability), averaged over the labels that
    occur but not everywhere; None when fewer than two labels occur."""
    from sklearn.metrics import roc_auc_score

    present = [k for k in range(probabilities.shape[1]) if 0 < (labels == k).sum() < len(labels)]
    if len(present) < 2:
        return None
    return float(np.mean([roc_auc_score(labels == k, probabilities[:, k]) for k in present]))


# ----------------------------------------------------------------------------- temperature scaling


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normaliser = (top + np.log(np.exp(scaled - top).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_normaliser - scaled[np.arange(len(scaled)), np.asarray(labels).astype(int)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on held-out data (Guo et al., 2017).

    One scalar, so the predicted label never changes, only how sure the model says it is. The NLL
    is convex in 1/T, hence unimodal in log T: a bounded Brent search over log T finds the optimum.
    logits: (n, classes); labels: (n,) class indices.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0 or len(logits) != len(labels):
        raise ValueError("fit_temperature needs logits of shape (n, classes) with n > 0 and one label per row.")
    lower, upper = (math.log(bound) for bound in bounds)
    result = minimize_scalar(
        lambda log_t: temperature_nll(logits, labels, math.exp(log_t)),
        bounds=(lower, upper),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def top_label_ece(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """ECE of softmax(logits / temperature): top-label confidence against accuracy, any number of labels."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return expected_calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)


def calibration_record(logits: np.ndarray, labels: np.ndarray, split: str = "validation split", seed: int = 0) -> dict:
    """Fit the temperature, keep it only if it helped reviews it was not fitted on, and describe the fit:
    what calibration.json holds.

    With at least MIN_CALIBRATION_EXAMPLES reviews, the split is cut into CALIBRATION_FOLDS random folds
    and each fold is scaled by a temperature fitted (within FITTED_TEMPERATURE_BOUNDS) on the others, so
    every review gets a T that never saw it. The temperature refitted on the whole split is kept only if
    those held-out probabilities have both a lower log loss and a lower calibration error than T = 1 on
    the same reviews (a paired comparison); otherwise T = 1, and `reason` says why.

    `ece_before` and `nll_before` are T = 1's on the whole split. `ece_after` and `nll_after` are those
    of what was kept: the cross-fitted, held-out figures for a kept T (not the in-sample ones, which the
    fit itself lowers), T = 1's again otherwise; `held_out_check` has the check's own figures either way.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    count = len(labels)
    before = {"ece": top_label_ece(logits, labels), "nll": temperature_nll(logits, labels, 1.0)}
    after, check, reason, temperature = before, None, None, 1.0
    if count < MIN_CALIBRATION_EXAMPLES:
        reason = f"kept T = 1: {count} validation reviews, fewer than the {MIN_CALIBRATION_EXAMPLES} a fit needs"
    else:
        check = cross_fitted_check(logits, labels, seed)
        if check["nll_after"] < check["nll_before"] and check["ece_after"] < check["ece_before"]:
            temperature = fit_temperature(logits, labels, FITTED_TEMPERATURE_BOUNDS)
            after = {"ece": check["ece_after"], "nll": check["nll_after"]}
        else:
            reason = (
                f"kept T = 1: temperatures fitted on {CALIBRATION_FOLDS - 1} of {CALIBRATION_FOLDS} folds did not "
                f"lower both the held-out log loss ({check['nll_before']:.4f} -> {check['nll_after']:.4f}) and "
                f"calibration error ({check['ece_before']:.4f} -> {check['ece_after']:.4f})"
            )
    return {
        "temperature": temperature,
        "method": "temperature scaling (Guo et al., 2017)",
        "fitted_on": f"{split}, n={count}",
        "nll_before": before["nll"],
        "nll_after": after["nll"],
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "policy": (
            f"fitted within {FITTED_TEMPERATURE_BOUNDS[0]}-{FITTED_TEMPERATURE_BOUNDS[1]} on at least "
            f"{MIN_CALIBRATION_EXAMPLES} reviews, kept only if it lowers both the log loss and the calibration "
            f"error of held-out reviews ({CALIBRATION_FOLDS}-fold cross-fitting); the 'after' figures are held-out"
        ),
        "held_out_check": check,
        "reason": reason,
    }


def cross_fitted_check(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Log loss and ECE of every review scaled by a temperature fitted on the other folds, against T = 1."""
    folds = np.array_split(np.random.default_rng(seed).permutation(len(labels)), CALIBRATION_FOLDS)
    scaled = np.empty_like(logits)  # (n, classes): each row divided by a temperature that never saw it
    temperatures = []
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(labels)), fold)
        temperatures.append(fit_temperature(logits[rest], labels[rest], FITTED_TEMPERATURE_BOUNDS))
        scaled[fold] = logits[fold] / temperatures[-1]
    return {
        "method": f"{CALIBRATION_FOLDS}-fold cross-fitting, n={len(labels)}",
        "fold_temperatures": temperatures,
        "nll_before": temperature_nll(logits, labels, 1.0),
        "nll_after": temperature_nll(scaled, labels, 1.0),
        "ece_before": top_label_ece(logits, labels),
        "ece_after": top_label_ece(scaled, labels),
    }
