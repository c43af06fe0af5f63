"""Stratified splitting and subsampling with numpy only (torch-free, sklearn-free).

Every class keeps its share in each part, so a small validation split or a
``--max-train-samples`` run still sees every class.
"""

from __future__ import annotations

import numpy as np


def _per_class_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer counts per class summing to ``total``, proportional to ``class_sizes`` (largest remainder)."""
    share = class_sizes * (total / class_sizes.sum())
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return np.minimum(counts, class_sizes)


def stratified_split(labels: np.ndarray, fraction: float, seed: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` index arrays; ``held_out`` has about ``fraction`` of every class.

    A class with at least two examples keeps at least one on each side, so
    validation metrics cover every class and training never loses one.
    ``fold`` k holds out the k-th such slice of the same per-class shuffle:
    folds of one seed never overlap (fold 0 is the plain split), which is how
    the members of an ensemble each get their own validation documents.
    A class too small for fold k holds nothing out there.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    wanted = _per_class_counts(sizes, int(round(fraction * len(labels))))
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for cls, size, n_held in zip(classes, sizes, wanted, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_held = int(min(max(n_held, 1), size - 1)) if size >= 2 and fraction > 0 else 0
        start = min(fold * n_held, size - 1)
        end = min(start + n_held, size - 1)
        held.append(idx[start:end])
        kept.append(np.concatenate([idx[:start], idx[end:]]))
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` examples with class proportions preserved (all when ``size >= n``)."""
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    counts = _per_class_counts(sizes, size)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == cls))[:n] for cls, n in zip(classes, counts, strict=True)]
    return np.sort(np.concatenate(chosen))
