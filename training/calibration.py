"""Calibrated probabilities: a temperature (and a per-class bias where it earns its place) fitted out of fold.

Label smoothing, distillation towards a soft teacher, averaging members and mixing in the linear branch
each flatten the model's output, so its raw top score under-states how often the label is right. The
fix is fitted after training, on held-out predictions only: the out-of-fold validation probabilities of
the final output (each fold scored by the member that did not train on it, mixed with a branch fitted
without it; ``TrainResult.held_out``). It is applied to log-probabilities::

    p_calibrated = softmax(log p / T + b)

A temperature alone never changes the argmax (dividing by ``T > 0`` keeps the order). A per-class bias
``b`` (vector scaling) is kept only when cross-validation inside the out-of-fold set says it lowers the
log-loss measurably (paired, by more than two standard errors); otherwise ``b`` is zero. The exported
graph applies the same formula to the classifier's output (``export/calibrated.py``), which is
``log p`` up to a per-document constant that the softmax cancels.

Torch-free: the exporter's reference, the report and the tests all use these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

ECE_BINS = 15
CROSS_VALIDATION_FOLDS = 5
# Probabilities that underflowed to 0 in float32 still need a finite logarithm.
SMALLEST_PROBABILITY = 1e-30
# The class bias is defined up to a constant; a small penalty pins it near zero mean and keeps a class
# seen a handful of times from getting an unbounded bias.
BIAS_PENALTY = 1e-3
METHOD_TEMPERATURE, METHOD_CLASS_BIAS, METHOD_NONE = "temperature", "temperature+class_bias", "none"


@dataclass(frozen=True)
class Calibration:
    """``softmax(log p / temperature + class_bias)``; the identity is temperature 1 without a bias."""

    temperature: float = 1.0
    class_bias: tuple[float, ...] | None = None
    method: str = METHOD_NONE

    def apply_to_log_probabilities(self, log_probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from ``log p`` (or logits: a per-row constant cancels)."""
        scores = np.asarray(log_probabilities, dtype=np.float64) / self.temperature
        if self.class_bias is not None:
            scores = scores + np.asarray(self.class_bias)
        return _softmax(scores)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return self.apply_to_log_probabilities(_log(probabilities))

    def to_dict(self) -> dict:
        """The plain dict stored in the checkpoint (``calibration``) and the bundle's manifest."""
        return {"method": self.method, "temperature": self.temperature,
                "class_bias": None if self.class_bias is None else list(self.class_bias)}

    @classmethod
    def from_dict(cls, stored: dict | None) -> Calibration:
        if not stored:
            return cls()
        bias = stored.get("class_bias")
        return cls(float(stored["temperature"]), None if bias is None else tuple(float(b) for b in bias),
                   str(stored.get("method", METHOD_TEMPERATURE)))


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), SMALLEST_PROBABILITY))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def reliability_bins(probabilities: np.ndarray, labels, bins: int = ECE_BINS) -> list[tuple[float, float, float]]:
    """Per non-empty equal-width bin of the top score: (share of documents, mean top score, accuracy)."""
    labels = np.asarray(labels, dtype=np.int64)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return [(float((index == b).mean()), float(confidence[index == b].mean()), float(correct[index == b].mean()))
            for b in range(bins) if (index == b).any()]


def expected_calibration_error(probabilities: np.ndarray, labels, bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy - mean top score| per equal-width bin, weighted by the bin's share of documents."""
    return float(sum(share * abs(accuracy - confidence)
                     for share, confidence, accuracy in reliability_bins(probabilities, labels, bins)))


def negative_log_likelihood(probabilities: np.ndarray, labels) -> float:
    labels = np.asarray(labels, dtype=np.int64)
    return float(-_log(probabilities[np.arange(len(labels)), labels]).mean())


def brier_score(probabilities: np.ndarray, labels) -> float:
    """Multi-class Brier score: mean over documents of the squared distance to the one-hot truth."""
    labels = np.asarray(labels, dtype=np.int64)
    one_hot = np.zeros_like(probabilities, dtype=np.float64)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def calibration_scores(probabilities: np.ndarray, labels) -> dict:
    """ECE (15 bins), NLL, Brier, accuracy and mean top score of ``probabilities`` against ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    return {"ece": round(expected_calibration_error(probabilities, labels), 5),
            "nll": round(negative_log_likelihood(probabilities, labels), 5),
            "brier": round(brier_score(probabilities, labels), 5),
            "accuracy": round(float((probabilities.argmax(axis=1) == labels).mean()), 5),
            "mean_confidence": round(float(probabilities.max(axis=1).mean()), 5),
            "documents": int(len(labels))}


def _per_document_nll(calibration: Calibration, log_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    calibrated = calibration.apply_to_log_probabilities(log_probabilities)
    return -_log(calibrated[np.arange(len(labels)), labels])


def _fit(log_probabilities: np.ndarray, labels: np.ndarray, with_bias: bool) -> Calibration:
    """The NLL-minimising inverse temperature (optimised as its logarithm) and, ``with_bias``, class bias."""
    count, classes = log_probabilities.shape
    one_hot = np.zeros((count, classes))
    one_hot[np.arange(count), labels] = 1.0

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        inverse = np.exp(params[0])
        bias = params[1:] if with_bias else 0.0
        scores = inverse * log_probabilities + bias
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        value = float((log_norm - (shifted * one_hot).sum(axis=1)).mean())
        residual = (np.exp(shifted - log_norm[:, None]) - one_hot) / count  # d loss / d scores
        gradient = [inverse * float((residual * log_probabilities).sum())]
        if with_bias:
            value += BIAS_PENALTY * float(params[1:] @ params[1:])
            gradient.extend(residual.sum(axis=0) + 2 * BIAS_PENALTY * params[1:])
        return value, np.asarray(gradient)

    start = np.zeros(1 + (classes if with_bias else 0))
    result = minimize(loss, start, jac=True, method="L-BFGS-B",
                      bounds=[(np.log(0.02), np.log(50.0))] + [(None, None)] * (len(start) - 1))
    temperature = float(1.0 / np.exp(result.x[0]))
    if with_bias:
        return Calibration(temperature, tuple(float(b) for b in result.x[1:]), METHOD_CLASS_BIAS)
    return Calibration(temperature, None, METHOD_TEMPERATURE)


def calibrated_log_loss(probabilities: np.ndarray, labels) -> float:
    """Mean NLL after the temperature that minimises it: how well held-out scores separate the classes, not how
    sharp they happen to be (a candidate trained one epoch less is flatter, which a temperature undoes)."""
    labels = np.asarray(labels, dtype=np.int64)
    log_probabilities = _log(probabilities)
    return float(_per_document_nll(_fit(log_probabilities, labels, False), log_probabilities, labels).mean())


def _cross_fitted(log_probabilities: np.ndarray, labels: np.ndarray, with_bias: bool, folds: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """Each document calibrated by a fit on the other folds: (probabilities, per-document NLL)."""
    calibrated = np.zeros_like(log_probabilities)
    for fold in np.unique(folds):
        held = folds == fold
        fitted = _fit(log_probabilities[~held], labels[~held], with_bias)
        calibrated[held] = fitted.apply_to_log_probabilities(log_probabilities[held])
    return calibrated, -_log(calibrated[np.arange(len(labels)), labels])


def fit_calibration(probabilities: np.ndarray, labels, seed: int = 0) -> tuple[Calibration, dict]:
    """The calibration fitted on held-out ``probabilities``, and the report of how it was chosen.

    The report's ``validation`` scores compare the raw probabilities with cross-fitted calibrated
    ones (each document calibrated by a fit that did not see it), so they are not flattered by the fit.
    """
    labels = np.asarray(labels, dtype=np.int64)
    log_probabilities = _log(probabilities)
    if len(labels) < 2 * CROSS_VALIDATION_FOLDS:
        return Calibration(), {"method": METHOD_NONE, "reason": f"{len(labels)} held-out documents are too few"}
    folds = np.random.default_rng(seed).permutation(len(labels)) % CROSS_VALIDATION_FOLDS
    plain, plain_nll = _cross_fitted(log_probabilities, labels, False, folds)
    biased, biased_nll = _cross_fitted(log_probabilities, labels, True, folds)
    gain = plain_nll - biased_nll
    standard_error = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    keep_bias = float(gain.mean()) > 2 * standard_error
    calibration = _fit(log_probabilities, labels, keep_bias)
    report = {
        "method": calibration.method, "temperature": round(calibration.temperature, 5),
        "class_bias": None if calibration.class_bias is None else [round(b, 5) for b in calibration.class_bias],
        "fitted_on": "out-of-fold validation predictions of the final model (test split not used)",
        "documents": int(len(labels)),
        "selection": {"folds": CROSS_VALIDATION_FOLDS, "temperature_nll": round(float(plain_nll.mean()), 5),
                      "class_bias_nll": round(float(biased_nll.mean()), 5),
                      "bias_gain_standard_error": round(standard_error, 5), "class_bias_kept": keep_bias},
        "validation": {"before": calibration_scores(probabilities, labels),
                       "after_cross_fitted": calibration_scores(biased if keep_bias else plain, labels)},
    }
    return calibration, report
