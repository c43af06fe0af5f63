"""TF-IDF + LinearSVC: the bar an LSTM has to beat, trained and tested on the same split. Torch-free."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from training.metrics import classification_metrics


def linear_model():
    """The baseline's estimator, also the distillation teacher's (``training.teacher``)."""
    # Seeded: liblinear's dual solver shuffles with the global RNG otherwise, and distilled runs would not repeat.
    return make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LinearSVC(C=1.0, random_state=0))


def as_two_columns(margins: np.ndarray) -> np.ndarray:
    """With two classes sklearn returns the positive-class margin only; make it ``[n, 2]``."""
    return np.stack([-margins, margins], axis=1) if margins.ndim == 1 else margins


def run_baseline(train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str],
                 test_labels: Sequence[int], label_names: list[str]) -> dict:
    """Fit on the training part, score the test part; MAP uses ``decision_function`` scores."""
    start = time.perf_counter()
    model = linear_model()
    model.fit(list(train_texts), list(train_labels))
    margins = as_two_columns(model.decision_function(list(test_texts)))
    # Columns follow the classes seen in training; a class absent there never scores.
    scores = np.full((len(test_texts), len(label_names)), -1e9, dtype=np.float64)
    scores[:, model.classes_] = margins
    metrics = classification_metrics(test_labels, scores, label_names)
    metrics["model"] = "TF-IDF (sublinear tf, min_df=2) + LinearSVC(C=1)"
    metrics["train_seconds"] = round(time.perf_counter() - start, 2)
    return metrics
