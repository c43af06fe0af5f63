"""Classification metrics shared by the LSTM and the baseline. Torch-free."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean over classes of one-vs-rest average precision; classes absent from ``y_true`` are skipped."""
    aps = [average_precision_score(y_true == c, scores[:, c]) for c in range(scores.shape[1]) if (y_true == c).any()]
    return float(np.mean(aps)) if aps else float("nan")


def classification_metrics(y_true, scores: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, MAP and per-class precision/recall/F1 from per-class ``scores`` [n, C]."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = scores.argmax(axis=1)
    classes = list(range(len(label_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class never predicted has undefined precision: reported as 0
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, zero_division=0)
        macro_f1 = f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 5),
        "macro_f1": round(float(macro_f1), 5),
        "mean_average_precision": round(mean_average_precision(y_true, scores), 5),
        "examples": int(len(y_true)),
        "per_class": {
            name: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                   "support": int(s)}
            for name, p, r, f, s in zip(label_names, precision, recall, f1, support, strict=True)
        },
    }


CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def confidence_coverage(y_true, probabilities: np.ndarray, thresholds=CONFIDENCE_THRESHOLDS) -> list[dict]:
    """Per threshold t: the share of documents whose top probability is at least t (what the worker keeps with
    ``--min-confidence t``; the rest go to review) and the accuracy on that share."""
    y_true = np.asarray(y_true, dtype=np.int64)
    top, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    rows = []
    for t in thresholds:
        kept = top >= t
        rows.append({"min_confidence": t, "coverage": round(float(kept.mean()), 4),
                     "accuracy": round(float((predicted[kept] == y_true[kept]).mean()), 4) if kept.any() else None})
    return rows


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
