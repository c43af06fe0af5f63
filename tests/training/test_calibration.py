"""training.calibration: the scores, the fit, the method choice (numpy logic, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import (
    METHOD_CLASS_BIAS,
    METHOD_TEMPERATURE,
    Calibration,
    brier_score,
    calibration_scores,
    expected_calibration_error,
    fit_calibration,
    negative_log_likelihood,
)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def flattened(documents: int, classes: int, sharpening: float, seed: int, shift: np.ndarray | None = None):
    """Scores whose truth is drawn from softmax(sharpening * logits + shift): the model reports softmax(logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(documents, classes))
    true = softmax(sharpening * logits + (0.0 if shift is None else shift))
    labels = np.array([rng.choice(classes, p=p) for p in true])
    return softmax(logits), labels


def test_ece_of_a_constant_score_is_its_gap_to_the_accuracy() -> None:
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 6 + [1] * 4)  # 60 % right at a score of 0.8
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.2)
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(-(6 * np.log(0.8) + 4 * np.log(0.2)) / 10)
    assert brier_score(probabilities, labels) == pytest.approx((6 * 0.08 + 4 * 1.28) / 10)


def test_a_temperature_never_changes_the_argmax() -> None:
    probabilities, _ = flattened(2000, 7, 1.0, seed=1)
    for temperature in (0.05, 0.3, 1.0, 2.5, 40.0):
        calibrated = Calibration(temperature, None, METHOD_TEMPERATURE).apply(probabilities)
        np.testing.assert_array_equal(calibrated.argmax(axis=1), probabilities.argmax(axis=1))
        np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-9)


def test_the_formula_is_softmax_of_log_probabilities_over_t_plus_bias() -> None:
    probabilities, _ = flattened(50, 4, 1.0, seed=2)
    calibration = Calibration(0.5, (0.1, -0.2, 0.0, 0.3), METHOD_CLASS_BIAS)
    expected = softmax(np.log(probabilities) / 0.5 + np.array([0.1, -0.2, 0.0, 0.3]))
    np.testing.assert_allclose(calibration.apply(probabilities), expected, rtol=1e-9)
    # Logits give the same as log-probabilities: the per-row constant cancels.
    np.testing.assert_allclose(calibration.apply_to_log_probabilities(np.log(probabilities) + 7.0), expected, rtol=1e-9)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert Calibration.from_dict(None) == Calibration()


def test_an_underconfident_model_gets_a_temperature_below_one_and_better_scores() -> None:
    probabilities, labels = flattened(4000, 10, 2.5, seed=3)
    calibration, report = fit_calibration(probabilities, labels)
    assert calibration.method == METHOD_TEMPERATURE and calibration.class_bias is None
    assert calibration.temperature == pytest.approx(1 / 2.5, rel=0.1)
    before, after = report["validation"]["before"], report["validation"]["after_cross_fitted"]
    assert after["ece"] < 0.5 * before["ece"] and after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert after["accuracy"] == before["accuracy"]
    # On new documents from the same source, the fitted calibration still helps.
    fresh, fresh_labels = flattened(4000, 10, 2.5, seed=4)
    raw = calibration_scores(fresh, fresh_labels)
    calibrated = calibration_scores(calibration.apply(fresh), fresh_labels)
    assert calibrated["ece"] < 0.03 < raw["ece"] and calibrated["nll"] < raw["nll"]


def test_a_class_bias_is_kept_only_where_cross_validation_says_it_helps() -> None:
    shift = np.array([1.5, 0.0, 0.0, -1.5, 0.0])
    probabilities, labels = flattened(4000, 5, 1.0, seed=5, shift=shift)
    calibration, report = fit_calibration(probabilities, labels)
    assert calibration.method == METHOD_CLASS_BIAS and report["selection"]["class_bias_kept"]
    bias = np.asarray(calibration.class_bias)
    assert bias[0] - bias[3] == pytest.approx(3.0, abs=0.5)
    unshifted, unshifted_labels = flattened(4000, 5, 1.0, seed=6)
    assert fit_calibration(unshifted, unshifted_labels)[0].method == METHOD_TEMPERATURE


def test_too_few_documents_leave_the_scores_as_they_are() -> None:
    probabilities, labels = flattened(6, 3, 1.0, seed=7)
    calibration, report = fit_calibration(probabilities, labels)
    assert calibration == Calibration() and "too few" in report["reason"]
    np.testing.assert_allclose(calibration.apply(probabilities), probabilities, rtol=1e-9)
