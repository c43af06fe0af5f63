"""The parity gate's documents are drawn from the whole validation split, not from a class-ordered head."""

from __future__ import annotations

from collections import Counter

from core.vocab import Vocabulary
from export.parity import MIN_PARITY_DOCS, select_documents

CLASSES = ("alpha", "beta", "gamma", "delta")


def _class_ordered(per_class: int) -> tuple[list[str], dict[str, str]]:
    """Documents written class after class, as validation.jsonl is; each carries its class's word."""
    texts = [f"{name} document number {i} " + "filler " * (i % 50) for name in CLASSES for i in range(per_class)]
    return texts, {t: t.split()[0] for t in texts}


def test_every_class_is_in_the_sample_in_about_its_share() -> None:
    texts, label_of = _class_ordered(400)
    vocab = Vocabulary.build(texts, max_size=100, min_freq=1)
    docs = select_documents(texts, vocab, max_len=32, count=MIN_PARITY_DOCS)
    real = [label_of[t] for t in docs.texts if t in label_of]
    assert len(real) == MIN_PARITY_DOCS - 2
    shares = Counter(real)
    assert set(shares) == set(CLASSES)
    assert all(abs(n / len(real) - 0.25) < 0.06 for n in shares.values()), shares
    assert docs.one_token >= 1 and docs.truncated >= 1  # the edge cases are still there


def test_the_sample_repeats_and_a_small_split_is_topped_up_to_the_minimum() -> None:
    texts, _ = _class_ordered(400)
    vocab = Vocabulary.build(texts, max_size=100, min_freq=1)
    assert select_documents(texts, vocab, 32, 600).texts == select_documents(texts, vocab, 32, 600).texts
    small = texts[:40]
    docs = select_documents(small, vocab, 32, MIN_PARITY_DOCS)
    assert len(docs.texts) == MIN_PARITY_DOCS and set(small) <= set(docs.texts)
