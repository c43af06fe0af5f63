"""Vocabulary and ``encode``: the second half of the text→ids contract."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.exceptions import VocabularyError
from core.text import TOKENIZER_NAME, tokenize

VOCAB_FORMAT = "lstm-worker-vocab/1"
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


@dataclass(frozen=True)
class Vocabulary:
    """Token list with ``<pad>`` at 0 and ``<unk>`` at 1, plus how text is split."""

    tokens: tuple[str, ...]
    lowercase: bool = True
    tokenizer: str = TOKENIZER_NAME
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD_TOKEN, UNK_TOKEN):
            raise VocabularyError(f"vocabulary must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
        if len(set(self.tokens)) != len(self.tokens):
            raise VocabularyError("vocabulary has duplicate tokens")
        if self.tokenizer != TOKENIZER_NAME:
            raise VocabularyError(
                f"vocabulary was built with tokenizer {self.tokenizer!r}, this code implements "
                f"{TOKENIZER_NAME!r}: re-export the model with this version"
            )
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        max_size: int,
        min_freq: int = 1,
        lowercase: bool = True,
        max_tokens_per_text: int | None = None,
    ) -> Vocabulary:
        """Most frequent tokens first (ties broken alphabetically, so builds are reproducible)."""
        if max_size < 3:
            raise VocabularyError("max_size must be at least 3 (pad, unk and one token)")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, lowercase, max_tokens_per_text))
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls((PAD_TOKEN, UNK_TOKEN, *ranked[: max_size - 2]), lowercase=lowercase)

    def token_ids(self, text: str, max_len: int) -> list[int]:
        """Ids of the first ``max_len`` tokens; a text without tokens becomes ``[UNK_ID]``.

        Never empty: every document reaches the model with length >= 1, so an
        LSTM always has a last state to read.
        """
        index = self._index
        ids = [index.get(t, UNK_ID) for t in tokenize(text, self.lowercase, max_len)]
        return ids or [UNK_ID]

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 [n, L], lengths int64 [n])`` with ``L = max(lengths)``, right-padded."""
        return pad_batch([self.token_ids(t, max_len) for t in texts])

    def to_dict(self) -> dict:
        return {
            "format": VOCAB_FORMAT,
            "tokenizer": self.tokenizer,
            "lowercase": self.lowercase,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise VocabularyError(f"not a vocabulary of format {VOCAB_FORMAT!r}")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise VocabularyError("vocabulary 'tokens' must be a list of strings")
        return cls(tuple(tokens), lowercase=bool(data.get("lowercase", True)),
                   tokenizer=str(data.get("tokenizer")))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabularyError(f"vocabulary file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VocabularyError(f"vocabulary file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def pad_batch(id_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists with ``PAD_ID`` into ``(ids [n, L], lengths [n])`` int64 arrays."""
    lengths = np.fromiter((len(x) for x in id_lists), dtype=np.int64, count=len(id_lists))
    width = int(lengths.max()) if len(id_lists) else 1
    ids = np.full((len(id_lists), width), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(id_lists):
        ids[row, : len(seq)] = seq
    return ids, lengths
