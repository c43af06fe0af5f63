"""Text normalisation and tokenisation: the first half of the text→ids contract.

Training, export and the worker all tokenise through :func:`tokenize`, so a
model never sees text split differently in production than in training.
The golden tests in ``tests/core`` pin its output; changing it is a breaking
change of the bundle format (bump ``TOKENIZER_NAME``).
"""

from __future__ import annotations

import re
import unicodedata

# Versioned name stored in checkpoints and bundles; the loader refuses a
# bundle whose tokenizer differs from the one this code implements.
TOKENIZER_NAME = "regex-word-v1"

# Words (letters with inner apostrophes), numbers, and runs of a few symbols
# that carry signal in newsgroup/e-mail text ("@", "$", "!", "?").
_TOKEN_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*|[@$!?]")


def normalize(text: str, lowercase: bool = True) -> str:
    """NFKC-normalise (folds full-width forms and ligatures) and optionally lowercase."""
    text = unicodedata.normalize("NFKC", text)
    return text.lower() if lowercase else text


def tokenize(text: str, lowercase: bool = True, max_tokens: int | None = None) -> list[str]:
    """Split ``text`` into tokens; stop after ``max_tokens`` when given.

    Stopping early keeps the cost of a megabyte-sized message proportional to
    what the model will read, not to the message size.
    """
    text = normalize(text, lowercase)
    if max_tokens is None:
        return _TOKEN_RE.findall(text)
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(text):
        tokens.append(match.group())
        if len(tokens) >= max_tokens:
            break
    return tokens
