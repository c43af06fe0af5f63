"""Soft targets from a TF-IDF + LinearSVC teacher, for distillation into the LSTM. Torch-free.

Why: on 20 Newsgroups the LSTM fits the training period (0.92 validation
macro-F1) but loses more on the later test posts than the linear model does
(0.82 vs 0.86). Asking the LSTM to also match the linear model's class scores
passes on what generalises there: which classes a document is *close* to.

The scores are out-of-fold: each training document is scored by a teacher that
did not see it. In-sample, a LinearSVC separates the training set almost
perfectly and its scores would only repeat the labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from training.baseline import as_two_columns, linear_model

MAX_FOLDS = 5


def teacher_margins(texts: Sequence[str], labels: Sequence[int], num_classes: int, *, seed: int) -> np.ndarray:
    """``[n, num_classes]`` out-of-fold SVM margins; a class with no training document gets ``-inf``."""
    labels_array = np.asarray(labels)
    present = np.unique(labels_array)
    smallest_class = int(np.bincount(labels_array)[present].min()) if len(labels_array) else 0
    folds = min(MAX_FOLDS, smallest_class)
    if folds < 2:
        raise ValueError("distillation needs at least 2 training documents in every class")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        margins = as_two_columns(cross_val_predict(linear_model(), list(texts), labels_array, cv=splitter,
                                                   method="decision_function"))
    except ValueError as exc:
        if "no terms remain" not in str(exc):
            raise
        # scikit-learn's "Try a lower min_df": no word is in two documents of a fold, i.e. far too little text.
        raise ValueError("too little text to distill from (no word occurs in two training documents of a "
                         "fold): add examples, or pass --distill-weight 0") from None
    scores = np.full((len(labels_array), num_classes), -np.inf)
    scores[:, present] = margins
    return scores


def soft_targets(margins: np.ndarray, sharpness: float) -> np.ndarray:
    """``[n, num_classes]`` float32 probabilities: softmax(``sharpness`` x margins).

    LinearSVC margins sit around [-1.5, 1.5]; ``sharpness`` turns them into a distribution
    (larger = closer to one-hot).
    """
    scores = margins * sharpness
    scores = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(scores)
    return (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_soft_targets(texts: Sequence[str], labels: Sequence[int], num_classes: int, *,
                         sharpness: float, seed: int) -> np.ndarray:
    """Soft targets of out-of-fold teacher margins (see :func:`teacher_margins`, :func:`soft_targets`)."""
    return soft_targets(teacher_margins(texts, labels, num_classes, seed=seed), sharpness)


def teacher_accuracy(soft_targets: np.ndarray, labels: Sequence[int]) -> float:
    return float((soft_targets.argmax(axis=1) == np.asarray(labels)).mean())
