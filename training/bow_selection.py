"""``--bow-weight auto``: choose the linear branch's weight, sharpness and features on validation data, out of fold.

Each member of a run holds out its own validation fold. On fold k, the member that did not train on
it gives its probabilities, and a linear branch fitted exactly like the final one (``fit_bag_of_words``)
but on the other documents (member k's training part) gives its margins; neither saw the fold's
labels. Each (weight, sharpness) pair is scored by the accuracy of the mixed probabilities pooled
over all folds; the best wins, ties going to the smaller weight, then to the sharpness listed first.
The features are chosen the same way: a branch over single words and one that also counts word
pairs are both fitted per fold, and the pairs are kept only if they score higher (they help long
posts, and can hurt short texts, where most pairs are seen once).

Two leanings, in opposite directions, to keep in mind when reading the chosen weight: the final model
mixes the branch with the *average* of the members, which is more accurate than the one member scored
on each fold (so the weight chosen here is, if anything, larger than the best one for the average);
and each member picked its best epoch on its own fold, a slightly optimistic LSTM score (which leans
towards a smaller weight).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.bag_of_words import branch_margins, fit_bag_of_words

# Candidates: 0 (LSTM alone) to 0.8 in steps of 0.05; the sharpness 6 (the distillation teacher's) first.
WEIGHTS = tuple(round(0.05 * i, 2) for i in range(17))
SHARPNESSES = (6.0, 3.0, 10.0)


@dataclass(frozen=True)
class FoldScores:
    """One validation fold scored by models that did not train on it."""

    lstm_probabilities: np.ndarray  # [n, C] the member's probabilities
    linear_margins: np.ndarray | None  # [n, C] the branch's margins, fitted without the fold (None: no branch)
    labels: np.ndarray  # [n]


def fold_margins(fold_ids: Sequence[np.ndarray], train_ids: Sequence[np.ndarray], train_labels: Sequence[int],
                 vocab_size: int, num_classes: int, seed: int, bigram_buckets: int = 0) -> np.ndarray:
    """The linear margins on one fold from a branch fitted like the final one on ``train_ids`` (the fold left out)."""
    buffers = fit_bag_of_words(train_ids, train_labels, vocab_size, num_classes, seed, bigram_buckets)
    return branch_margins(buffers, fold_ids, bigram_buckets)


def mixed_probabilities(lstm: np.ndarray, margins: np.ndarray, weight: float, sharpness: float) -> np.ndarray:
    """What ``HybridClassifier`` outputs: (1 - w) x LSTM + w x softmax(sharpness x margins)."""
    scaled = sharpness * margins
    linear = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    linear /= linear.sum(axis=1, keepdims=True)
    return (1.0 - weight) * lstm + weight * linear


def choose_bow_weight(folds: Sequence[FoldScores], weights: Sequence[float] = WEIGHTS,
                      sharpnesses: Sequence[float] = SHARPNESSES) -> dict:
    """The (weight, sharpness) with the best pooled out-of-fold accuracy, and every score compared."""
    labels = np.concatenate([f.labels for f in folds])
    lstm = np.concatenate([f.lstm_probabilities for f in folds])
    margins = np.concatenate([f.linear_margins for f in folds])
    scores = []
    for weight in sorted(weights):
        for sharpness in sharpnesses[:1] if weight == 0 else sharpnesses:  # weight 0: the sharpness plays no part
            predicted = mixed_probabilities(lstm, margins, weight, sharpness).argmax(axis=1)
            scores.append({"weight": weight, "sharpness": sharpness,
                           "accuracy": round(float((predicted == labels).mean()), 5)})
    best = max(scores, key=lambda s: s["accuracy"])  # the first maximum: smallest weight, then sharpness order
    return {"weight": best["weight"], "sharpness": best["sharpness"], "accuracy": best["accuracy"],
            "lstm_accuracy": scores[0]["accuracy"],
            "linear_accuracy": round(float((margins.argmax(axis=1) == labels).mean()), 5),
            "documents": int(len(labels)), "folds": len(folds), "scores": scores}


def choose_branch(candidates: dict[int, Sequence[FoldScores]]) -> dict:
    """:func:`choose_bow_weight` for each feature set (bigram buckets -> its folds); the best set wins.

    Ties go to the fewer buckets (0: single words), the smaller model. The result is the winner's
    choice plus ``bigram_buckets`` and, per feature set compared, its best weight and accuracies.
    """
    choices = {buckets: choose_bow_weight(folds) for buckets, folds in sorted(candidates.items())}
    best = max(choices, key=lambda buckets: choices[buckets]["accuracy"])  # the first maximum: fewest buckets
    compared = [{"bigram_buckets": buckets, "weight": choice["weight"], "accuracy": choice["accuracy"],
                 "linear_accuracy": choice["linear_accuracy"]} for buckets, choice in choices.items()]
    return {**choices[best], "bigram_buckets": best, "features": compared}
