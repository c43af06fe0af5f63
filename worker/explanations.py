"""From per-position attributions to the ``explanation`` of an output: the document's strongest tokens.

The graph attributes to each position its first-order effect on the log-odds
of the predicted label (``training/attribution.py``). A word's weight is the sum
over its occurrences, since removing a word removes all of them. Listed: the
``k`` tokens with the largest positive weight, strongest first, as the bundle's
vocabulary spells them (normalised and lowercased like the model saw them).
``<unk>`` positions are left out: they stand for any out-of-vocabulary word, so
no token of the text can be named for them. Pads never reach here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.vocab import UNK_ID, Vocabulary

WEIGHT_DIGITS = 6  # as the scores are written


def top_tokens(token_ids: Sequence[int], attributions: np.ndarray, vocab: Vocabulary,
               k: int) -> tuple[tuple[str, float], ...]:
    """Up to ``k`` ``(token, weight)``, weight > 0 (rounded to :data:`WEIGHT_DIGITS`), strongest first."""
    ids = np.asarray(token_ids, dtype=np.int64)
    known = ids > UNK_ID
    words, positions = np.unique(ids[known], return_inverse=True)
    weights = np.bincount(positions, weights=attributions[known].astype(np.float64), minlength=len(words))
    strongest = np.argsort(-weights, kind="stable")[:k]
    chosen = ((vocab.tokens[int(words[i])], round(float(weights[i]), WEIGHT_DIGITS)) for i in strongest)
    return tuple((token, weight) for token, weight in chosen if weight > 0)


def explain_all(id_lists: Sequence[Sequence[int]], attributions: Sequence[np.ndarray], vocab: Vocabulary,
                k: int) -> list[tuple[tuple[str, float], ...]]:
    return [top_tokens(ids, a, vocab, k) for ids, a in zip(id_lists, attributions, strict=True)]
