"""Length-bucketed batches. Torch-free.

Padded batches of similar-length documents are what makes CPU training fast
here: a batch costs as many LSTM steps as its longest document, so grouping
by length removes most of the pad work (measured 7x faster than packed
sequences on 2 cores). Batches are still random: each epoch shuffles, sorts
only within large pools, and shuffles the order of the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from core.vocab import PAD_ID, UNK_ID, pad_batch


class BucketBatchSampler:
    """Yields index arrays covering every example exactly once per epoch.

    ``pool_batches`` batches' worth of shuffled examples are sorted by length
    and cut into batches; larger pools mean less padding, smaller pools more
    randomness.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, pool_batches: int = 50,
                 shuffle: bool = True):
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.pool = max(1, pool_batches) * batch_size
        self.shuffle = shuffle

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batches(self, epoch: int = 0) -> list[np.ndarray]:
        """The batches of ``epoch``; the same (seed, epoch) always gives the same batches (resume relies on it)."""
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        batches: list[np.ndarray] = []
        for start in range(0, n, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches(0))


def collate(id_lists: Sequence[np.ndarray], batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(ids [b, L], lengths [b])`` for the documents in ``batch``."""
    return pad_batch([id_lists[i] for i in batch])


def drop_words(ids: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a ``rate`` share of the real tokens by ``<unk>`` (training only).

    A regulariser against memorising rare tokens (names, addresses) that identify a training
    document's class but do not recur in later data. Pads stay pads, so lengths are unchanged.
    """
    dropped = (rng.random(ids.shape) < rate) & (ids != PAD_ID)
    return np.where(dropped, UNK_ID, ids)
