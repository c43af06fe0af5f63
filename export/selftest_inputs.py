"""Choose the inputs of a bundle's self-test without shipping the user's text.

Every candidate is a held-out validation document's token ids (never a training
document), truncated at max_len, *shuffled* (a random permutation) and cut to a
length drawn from one of the four length buckets. What ships is therefore an
unordered handful of word ids per document: no document's word order, and for
most, only part of its words. From those candidates, scored by the reference
model, the self-test keeps:

1. a 1-token input and a max_len input (the edges the LSTM's length handling must get right);
2. one input whose argmax is each label (a label never the argmax of any candidate is recorded, not an error);
3. at least one input per length bucket;
4. then inputs balancing labels and buckets, up to :data:`SELF_TEST_INPUTS`.

Only candidates whose top-1 probability beats the runner-up by more than
:data:`MARGIN_FACTOR` x the tolerance are eligible, so an argmax can never flip
because of a difference the tolerance allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from core.selftest import bucket_of, length_buckets

SELF_TEST_INPUTS = 48
MAX_CANDIDATES = 512
MARGIN_FACTOR = 10
SEED = 0
# Unsorted, uneven batches: most rows are padded, and one input runs alone.
SELF_TEST_BATCH_SIZES = (1, 5, 16, 2, 24)


def candidates(id_lists: Sequence[Sequence[int]], max_len: int, seed: int = SEED) -> list[list[int]]:
    """Shuffled, cut token-id bags of (at most :data:`MAX_CANDIDATES`) documents; lengths cycle the buckets."""
    rng = np.random.default_rng(seed)
    buckets = length_buckets(max_len)
    sources = [list(ids) for ids in id_lists if ids][:MAX_CANDIDATES]
    out = []
    for index, ids in enumerate(sources):
        low, high = buckets[index % len(buckets)]
        length = min(len(ids), int(rng.integers(low, high + 1)))
        if index == 0:
            length = 1
        elif index == 1:  # the edge at max_len, from the longest document (most are longer once truncated)
            ids = max(sources, key=len)
            length = len(ids)
        shuffled = [ids[j] for j in rng.permutation(len(ids))[:length]]
        if length > 1 and shuffled == ids[:length] and len(set(shuffled)) > 1:
            shuffled = shuffled[1:] + shuffled[:1]  # never the document's own order, even by chance
        out.append(shuffled)
    return out


def select(inputs: Sequence[Sequence[int]], probabilities: np.ndarray, n_labels: int, max_len: int,
           tolerance: float, count: int = SELF_TEST_INPUTS) -> list[int]:
    """Indices of the chosen inputs, in the order they will run."""
    buckets = length_buckets(max_len)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    eligible = [i for i in range(len(inputs)) if top2[i, 1] - top2[i, 0] > MARGIN_FACTOR * tolerance]
    argmax = probabilities.argmax(axis=1)
    bucket = [bucket_of(len(x), buckets) for x in inputs]
    chosen: list[int] = []
    per_label: Counter[int] = Counter()
    per_bucket: Counter[int] = Counter()

    def take(pool: Sequence[int]) -> None:
        pool = [i for i in pool if i not in chosen]
        if pool and len(chosen) < count:
            best = min(pool, key=lambda i: (per_label[argmax[i]], per_bucket[bucket[i]], i))
            chosen.append(best)
            per_label[argmax[best]] += 1
            per_bucket[bucket[best]] += 1

    for length in (1, max_len):
        take([i for i in eligible if len(inputs[i]) == length])
    for label in range(n_labels):
        take([i for i in eligible if argmax[i] == label])
    for b in range(len(buckets)):
        if not per_bucket[b]:
            take([i for i in eligible if bucket[i] == b])
    while len(chosen) < min(count, len(eligible)):
        take(eligible)
    return chosen


def coverage(inputs: Sequence[Sequence[int]], expected: np.ndarray, labels: Sequence[str], max_len: int,
             candidates_scored: int) -> dict:
    """What the manifest records about the chosen inputs, from the expectations that ship."""
    buckets = length_buckets(max_len)
    argmax = Counter(int(a) for a in expected.argmax(axis=1))
    per_bucket = Counter(bucket_of(len(x), buckets) for x in inputs)
    lengths = [len(x) for x in inputs]
    return {
        "method": "shuffled, cut token ids of held-out validation documents (no text, no word order)",
        "candidates": candidates_scored,
        "labels_covered": [labels[j] for j in range(len(labels)) if argmax[j]],
        # Not an error: a weak model may never predict some label on any candidate; recorded instead.
        "labels_never_argmax": [labels[j] for j in range(len(labels)) if not argmax[j]],
        "length_buckets": [{"lengths": list(buckets[b]), "inputs": per_bucket[b]} for b in range(len(buckets))],
        "lengths": {"min": min(lengths), "max": max(lengths)},
    }
