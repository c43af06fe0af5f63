"""From attributions to the output's ``explanation``: summed per word, <unk> and non-positive left out, rendered."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest

from core.engine import Prediction
from core.vocab import Vocabulary
from worker import codec
from worker.explanations import top_tokens
from worker.settings import build_settings

VOCAB = Vocabulary(("<pad>", "<unk>", "the", "shuttle", "orbit", "nasa", "a"))


def test_a_word_weighs_the_sum_of_its_occurrences_strongest_first() -> None:
    ids = [2, 3, 2, 4, 2, 5]  # the shuttle the orbit the nasa
    weights = np.array([0.01, 0.05, 0.01, 0.04, 0.01, 0.035], dtype=np.float32)
    assert top_tokens(ids, weights, VOCAB, 3) == (("shuttle", 0.05), ("orbit", 0.04), ("nasa", 0.035))
    assert top_tokens(ids, weights, VOCAB, 4)[3] == ("the", 0.03)  # three occurrences of 0.01


def test_unknown_and_non_positive_tokens_are_left_out() -> None:
    ids = [1, 3, 4, 6, 1]
    weights = np.array([0.9, 0.02, -0.3, 0.0, 0.9], dtype=np.float32)
    assert top_tokens(ids, weights, VOCAB, 5) == (("shuttle", 0.02),)
    assert top_tokens([1], np.array([0.5], np.float32), VOCAB, 5) == ()
    assert top_tokens(ids, weights, VOCAB, 0) == ()


def test_the_output_carries_the_explanation_only_when_there_is_one() -> None:
    plain = Prediction("sci.space", 0.9, (("sci.space", 0.9),))
    explained = Prediction("sci.space", 0.9, (("sci.space", 0.9),), (("shuttle", 0.05), ("orbit", 0.04)))
    body = codec.output_body(record_id=1, prediction=explained, model_id="m@1", source=None)
    assert body["explanation"] == [{"token": "shuttle", "weight": 0.05}, {"token": "orbit", "weight": 0.04}]
    assert json.loads(codec.to_json(body))["explanation"][0]["token"] == "shuttle"
    assert "explanation" not in codec.output_body(record_id=1, prediction=plain, model_id="m@1", source=None)
    nothing = Prediction("sci.space", 0.9, (("sci.space", 0.9),), ())
    assert codec.output_body(record_id=1, prediction=nothing, model_id="m@1", source=None)["explanation"] == []


def test_explain_must_not_be_negative() -> None:
    assert build_settings(topic="in", model="m", explain=5).explain == 5
    with pytest.raises(click.BadParameter, match="must not be negative"):
        build_settings(topic="in", model="m", explain=-1)
