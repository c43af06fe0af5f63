"""The length-bucketing sampler: every example once per epoch, little padding, reproducible."""

from __future__ import annotations

import numpy as np

from core.vocab import PAD_ID, UNK_ID
from training.batching import BucketBatchSampler, drop_words


def test_every_example_exactly_once_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(1, 400, size=1003)
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=7)
    for epoch in (1, 2):
        batches = sampler.batches(epoch)
        assert len(batches) == len(sampler) == 32
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(1003))
        assert max(len(b) for b in batches) == 32


def test_buckets_cut_padding_and_epochs_differ_but_repeat() -> None:
    lengths = np.random.default_rng(1).integers(1, 400, size=2000)
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=7)
    bucketed = sum(len(b) * lengths[b].max() for b in sampler.batches(1))
    rng = np.random.default_rng(2)
    order = rng.permutation(2000)
    random_batches = [order[i : i + 32] for i in range(0, 2000, 32)]
    unbucketed = sum(len(b) * lengths[b].max() for b in random_batches)
    assert bucketed < 0.7 * unbucketed
    assert [b.tolist() for b in sampler.batches(1)] == [b.tolist() for b in sampler.batches(1)]
    assert [b.tolist() for b in sampler.batches(1)] != [b.tolist() for b in sampler.batches(2)]


def test_word_dropout_replaces_real_tokens_only() -> None:
    ids = np.full((50, 100), 7)
    ids[:, 60:] = PAD_ID
    dropped = drop_words(ids, 0.25, np.random.default_rng(0))
    assert (dropped[:, 60:] == PAD_ID).all()
    assert set(np.unique(dropped[:, :60]).tolist()) == {UNK_ID, 7}
    assert 0.2 < (dropped[:, :60] == UNK_ID).mean() < 0.3
