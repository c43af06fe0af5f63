"""--time-budget planning: durations, what the data says, what a search may try. No training here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.budget_plan import (
    MAX_LEN_CAP,
    Shape,
    candidate_shapes,
    larger_shapes,
    max_len_candidates,
    parse_duration,
    profile_data,
    relative_work,
)
from training.data import load_dataset


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400),
                                               ("45", 45), ("2.5m", 150), (" 10 M ", 600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "m", "1h-5m"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_max_length_reads_most_documents_whole_and_is_capped() -> None:
    assert max_len_candidates({"p75": 17, "p95": 37}) == [40, 24]
    assert max_len_candidates({"p75": 700, "p95": 2000}) == [MAX_LEN_CAP]
    assert max_len_candidates({"p75": 2, "p95": 3}) == [16]


def test_short_real_texts_get_short_max_lengths_and_a_smaller_lstm(sms_spam: Path) -> None:
    data = load_dataset(sms_spam, text_field="2", label_field="1")
    profile = profile_data(data.train_texts, data.train_labels)
    assert profile.classes == 2 and profile.documents == len(data.train_texts)
    assert profile.length_percentiles["p50"] < profile.length_percentiles["p95"] < 100
    shapes = candidate_shapes(profile, epochs=10)
    base = shapes[0]
    # The base shape reads at least 95% of the messages whole, and not much more than the longest of those.
    lengths = profile.length_percentiles
    assert lengths["p95"] <= base.max_len < lengths["p95"] + 8
    assert base.hidden_size == 64 and base.epochs == 10
    assert {s.hidden_size for s in shapes} == {64, 32} and {s.epochs for s in shapes} == {10, 5}
    assert all(s.max_len <= base.max_len for s in shapes)


def test_work_grows_with_tokens_read_and_lstm_size(sms_spam: Path) -> None:
    data = load_dataset(sms_spam, text_field="2", label_field="1")
    profile = profile_data(data.train_texts, data.train_labels)
    long, short = max_len_candidates(profile.length_percentiles)
    work = [relative_work(Shape(n, h, 10), profile, 128) for n, h in ((long, 64), (short, 64), (long, 32))]
    assert work[0] > work[1] > 0 and work[0] > work[2] > 0
    assert np.isclose(work[0] / work[2], 64 * (64 + 128) / (32 * (32 + 128)))


def test_a_second_round_makes_the_best_shape_larger_one_way_at_a_time(sms_spam: Path) -> None:
    data = load_dataset(sms_spam, text_field="2", label_field="1")
    profile = profile_data(data.train_texts, data.train_labels)
    best = Shape(40, 64, 10)
    larger = larger_shapes(best, profile)
    assert Shape(40, 96, 10) in larger and Shape(40, 64, 15) in larger
    longest = [s for s in larger if s.max_len > best.max_len]
    assert longest and longest[0].max_len >= profile.length_percentiles["p99"]
    assert str(longest[0].max_len) in profile.mean_tokens_at  # its cost can be estimated
