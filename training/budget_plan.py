"""``--time-budget``: reading a duration, looking at the data, what a search may try and what it will cost.

Torch-free. The search itself is in :mod:`training.time_budget`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.text import tokenize

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
# Documents longer than this are cut: on 20 Newsgroups reading 512 tokens instead of 256 cost 1.4-1.6x the
# training time and moved test accuracy by less than the seed spread (docs/training.md, rounds 1 and 2).
MAX_LEN_CAP = 256
MIN_MAX_LEN = 16
PROFILE_SAMPLE = 4000  # documents whose lengths are counted (a stratified-enough random sample)
LENGTH_SCAN_LIMIT = 2048  # tokens counted per document at most


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``20m``, ``1h``, ``1h30m`` or a bare number of seconds."""
    cleaned = str(text).strip().lower().replace(" ", "")
    position, total = 0, 0.0
    for match in re.finditer(r"(\d+(?:\.\d+)?)([hms]?)", cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * UNITS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise ValueError(f"{text!r} is not a duration (write e.g. 90s, 20m, 1h or 1h30m)")
    return total


@dataclass(frozen=True)
class DataProfile:
    """What the search looks at before choosing what to try."""

    documents: int  # training documents (all folds)
    classes: int
    smallest_class: int
    length_percentiles: dict  # tokens per document: p50, p75, p90, p95, p99, max (counted up to 2,048)
    mean_tokens_at: dict  # mean tokens read per document at each candidate max length

    def to_dict(self) -> dict:
        return asdict(self)


def _round_up(value: float, step: int = 8) -> int:
    return int(math.ceil(value / step) * step)


def profile_data(texts: Sequence[str], labels: Sequence[int], lowercase: bool = True, seed: int = 0) -> DataProfile:
    """Token lengths (the model's tokenizer) of a sample of ``texts``, class count and sizes."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(texts), size=min(len(texts), PROFILE_SAMPLE), replace=False)
    lengths = np.array([len(tokenize(texts[i], lowercase, LENGTH_SCAN_LIMIT)) for i in sample])
    percentiles = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 75, 90, 95, 99)}
    percentiles["max"] = int(lengths.max())
    counts = np.bincount(np.asarray(labels))
    candidates = {*max_len_candidates(percentiles), _clip_length(percentiles["p99"])}
    return DataProfile(documents=len(texts), classes=int((counts > 0).sum()),
                       smallest_class=int(counts[counts > 0].min()), length_percentiles=percentiles,
                       mean_tokens_at={str(n): round(float(np.minimum(np.maximum(lengths, 1), n).mean()), 1)
                                       for n in sorted(candidates, reverse=True)})


def _clip_length(tokens: float) -> int:
    return min(MAX_LEN_CAP, max(MIN_MAX_LEN, _round_up(tokens)))


def max_len_candidates(percentiles: dict) -> list[int]:
    """The longest candidate reads 95% of the documents whole (capped at 256), the other 75% of them."""
    return sorted({_clip_length(percentiles["p95"]), _clip_length(percentiles["p75"])}, reverse=True)


@dataclass(frozen=True)
class Shape:
    """The settings a trial varies; everything else comes from the command line."""

    max_len: int
    hidden_size: int
    epochs: int

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_shapes(profile: DataProfile, epochs: int) -> list[Shape]:
    """What to try, first the base (longest reading, the size the data supports), then one change at a time.

    Hidden size by data size: 96 units per direction from 5,000 documents up (the default, chosen on
    20 Newsgroups' 11k), 64 below, 32 under 1,000; the alternative is half of it. Epochs: ``epochs``
    (the command line's) and half as many.
    """
    lengths = max_len_candidates(profile.length_percentiles)
    hidden = 96 if profile.documents >= 5000 else 64 if profile.documents >= 1000 else 32
    base = Shape(lengths[0], hidden, epochs)
    shapes = [base]
    if len(lengths) > 1:
        shapes.append(Shape(lengths[1], hidden, epochs))
    shapes.append(Shape(base.max_len, max(16, hidden // 2), epochs))
    if epochs >= 4:
        shapes.append(Shape(base.max_len, hidden, epochs // 2))
    return shapes


def larger_shapes(best: Shape, profile: DataProfile) -> list[Shape]:
    """A second round when time is left: the best shape made larger one way at a time (1.5x the hidden
    units, 1.5x the epochs, reading up to the 99th percentile of lengths)."""
    longest = _clip_length(profile.length_percentiles["p99"])
    shapes = [Shape(best.max_len, _round_up(best.hidden_size * 1.5, 16), best.epochs),
              Shape(best.max_len, best.hidden_size, best.epochs * 3 // 2)]
    if longest > best.max_len:
        shapes.append(Shape(longest, best.hidden_size, best.epochs))
    return shapes


def relative_work(shape: Shape, profile: DataProfile, embed_dim: int) -> float:
    """Training work per epoch in arbitrary units: tokens read x the LSTM's multiply-adds per token."""
    tokens = profile.mean_tokens_at.get(str(shape.max_len))
    if tokens is None:  # a length the profile did not count: scale the nearest one
        nearest = min(profile.mean_tokens_at, key=lambda n: abs(int(n) - shape.max_len))
        tokens = profile.mean_tokens_at[nearest] * min(1.0, shape.max_len / int(nearest))
    return tokens * shape.hidden_size * (shape.hidden_size + embed_dim)
