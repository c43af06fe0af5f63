"""Golden tests of the text→ids contract: training, export and the worker must encode identically.

If one of these fails, the tokenizer changed: every trained model and bundle
built before the change would be served with different ids. Bump
``TOKENIZER_NAME`` (the bundle loader then refuses old bundles) instead of
editing the expected values.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.exceptions import VocabularyError
from core.text import TOKENIZER_NAME, tokenize
from core.vocab import PAD_ID, UNK_ID, Vocabulary, pad_batch

GOLDEN_TOKENS = {
    "From: jdoe@cs.cmu.edu (John Doe)": ["from", "jdoe", "@", "cs", "cmu", "edu", "john", "doe"],
    "It's $3.50, isn't it?!": ["it's", "$", "3.50", "isn't", "it", "?", "!"],
    "Ｆｕｌｌ－ｗｉｄｔｈ ﬁle": ["full", "width", "file"],  # NFKC folds full-width forms and ligatures
    "Émile's café, 1,000 ÷ 2": ["émile's", "café", "1,000", "2"],
    "snake_case and CamelCase": ["snake", "case", "and", "camelcase"],
    "   \n\t  ": [],
    "über-cool—dash": ["über", "cool", "dash"],
}


@pytest.mark.parametrize("text, expected", GOLDEN_TOKENS.items())
def test_tokenize_golden(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_keeps_case_when_asked() -> None:
    assert tokenize("Hello World", lowercase=False) == ["Hello", "World"]


def test_tokenize_stops_at_max_tokens() -> None:
    text = "word " * 100_000
    assert tokenize(text, max_tokens=5) == ["word"] * 5


def test_tokenizer_name_is_pinned() -> None:
    assert TOKENIZER_NAME == "regex-word-v1"


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(["the cat sat", "the cat ran", "the dog"], max_size=6)


def test_build_orders_by_frequency_then_alphabet(vocab: Vocabulary) -> None:
    # the:3, cat:2, then dog/ran/sat (1 each) alphabetically, cut at max_size.
    assert vocab.tokens == ("<pad>", "<unk>", "the", "cat", "dog", "ran")


def test_encode_golden(vocab: Vocabulary) -> None:
    ids, lengths = vocab.encode(["The cat sat on the mat", "dog", ""], max_len=4)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(ids, [[2, 3, UNK_ID, UNK_ID], [4, PAD_ID, PAD_ID, PAD_ID], [UNK_ID, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [4, 1, 1])


def test_text_without_tokens_still_reaches_the_model(vocab: Vocabulary) -> None:
    assert vocab.token_ids("...", max_len=8) == [UNK_ID]
    assert vocab.token_ids("", max_len=8) == [UNK_ID]
    assert vocab.token_ids("!!", max_len=8) == [UNK_ID, UNK_ID]  # "!" is a token, unknown to this vocabulary


def test_pad_batch_width_is_longest() -> None:
    ids, lengths = pad_batch([[5, 6, 7], [8]])
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1])


def test_round_trip_through_json(vocab: Vocabulary, tmp_path) -> None:
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    assert json.loads(path.read_text())["pad_id"] == PAD_ID


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(tokens=["a", "b"]), "must start with"),
        (lambda d: d.update(tokens=["<pad>", "<unk>", "x", "x"]), "duplicate"),
        (lambda d: d.update(tokenizer="bpe-v9"), "re-export"),
        (lambda d: d.update(tokens="abc"), "list of strings"),
    ],
)
def test_malformed_vocabulary_is_refused(vocab: Vocabulary, mutate, message: str) -> None:
    data = vocab.to_dict()
    mutate(data)
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_dict(data)


def test_missing_vocabulary_file_names_the_path(tmp_path) -> None:
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.load(tmp_path / "nope.json")


def test_core_does_not_import_torch() -> None:
    code = "import core.bundle, core.bundle_writer, core.vocab, core.text, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
