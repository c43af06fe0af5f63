"""The report's confidence table: what --min-confidence T keeps, and how accurate that share is."""

from __future__ import annotations

import numpy as np

from training.metrics import confidence_coverage


def test_coverage_and_accuracy_of_what_each_threshold_keeps() -> None:
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.96, 0.04], [0.62, 0.38]])
    truth = [0, 1, 1, 0, 1]
    rows = {row["min_confidence"]: row for row in confidence_coverage(truth, probabilities, (0.5, 0.6, 0.8, 0.99))}
    assert rows[0.5] == {"min_confidence": 0.5, "coverage": 1.0, "accuracy": 0.6}  # everything kept
    assert rows[0.6] == {"min_confidence": 0.6, "coverage": 0.8, "accuracy": 0.75}  # 0.55 goes to review
    assert rows[0.8] == {"min_confidence": 0.8, "coverage": 0.4, "accuracy": 1.0}
    assert rows[0.99] == {"min_confidence": 0.99, "coverage": 0.0, "accuracy": None}  # nothing kept
