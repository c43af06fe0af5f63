"""What the worker produces for one record: a label or a dead letter, rendered in the largest form that fits.

Sizes are a ladder, written as data (:data:`LADDER`): a record starts on the
label rung (or the first dead-letter rung when it was rejected), and every time
the producer or the broker refuses its message as too large it moves one rung
down. A label that does not fit becomes a dead letter ``output_too_large``; a
dead letter is cut further on each rung, with headers saying what was cut, down
to one that carries only the ``error.*`` and ``source.*`` headers. Both delivery
guarantees use this one ladder, so the same input gets the same dead letter in
either mode, and a record never blocks its partition because of its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker import codec
from worker.offsets import Ticket
from worker.pipeline.ports import Headers, InputRecord
from worker.settings import WorkerSettings

TRUNCATED_HEADER = "error.value_truncated"
HEADERS_DROPPED_HEADER = "error.headers_dropped"
KEY_DROPPED_HEADER = "error.key_dropped"
_SMALL_VALUE_BYTES = 64 * 1024
_OUTPUT_TOO_LARGE = codec.Rejection(
    codec.OUTPUT_TOO_LARGE, "the label with the input's headers is more than the producer or the output topic accepts")


@dataclass(frozen=True)
class Rung:
    """One form of a record's message. ``cut_above``/``cut_to`` are byte counts, or names of settings."""

    label: bool = False
    cut_above: int | str = 0  # a value larger than this is cut ...
    cut_to: int | str = 0  # ... to this many bytes (with error.value_truncated)
    keep_headers: bool = True  # the input's headers
    keep_key: bool = True


LADDER: tuple[Rung, ...] = (
    Rung(label=True),
    # The producer cannot carry values above max_dead_letter_bytes: sending one whole would fail on every restart.
    Rung(cut_above="max_dead_letter_bytes", cut_to="max_message_bytes"),
    Rung(cut_above="max_message_bytes", cut_to="max_message_bytes"),
    Rung(cut_above=_SMALL_VALUE_BYTES, cut_to=_SMALL_VALUE_BYTES, keep_headers=False),
    Rung(cut_above=0, cut_to=0, keep_headers=False, keep_key=False),
)
FIRST_DEAD_LETTER = 1
LAST_RUNG = len(LADDER) - 1


@dataclass(frozen=True)
class Entry:
    """A polled record on its way through the pipeline: registered, decoded and tokenised."""

    record: InputRecord
    ticket: Ticket
    source: codec.SourceRef
    decoded: codec.Decoded | codec.Rejection
    token_ids: list[int]
    polled_at: float  # monotonic


@dataclass(frozen=True)
class Message:
    """One record's output in one form; ``outcome`` is its prediction or its rejection."""

    entry: Entry
    outcome: Any
    rung: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    shadow: bool = False  # a shadow model's label (--shadow-topic): it answers nothing and commits nothing
    model: str = ""  # the model that scored a label (the drift window counts the served model's only)

    @property
    def reason(self) -> str | None:
        """The dead-letter reason (``error.type``); None for a label."""
        if LADDER[self.rung].label:
            return None
        return self.outcome.reason if isinstance(self.outcome, codec.Rejection) else codec.OUTPUT_TOO_LARGE

    @property
    def smallest(self) -> bool:
        return self.rung >= LAST_RUNG


def render(entry: Entry, outcome: Any, settings: WorkerSettings, model_id: str, rung: int | None = None) -> Message:
    """``entry``'s message on ``rung`` (default: the first that applies to ``outcome``)."""
    if rung is None:
        rung = FIRST_DEAD_LETTER if isinstance(outcome, codec.Rejection) else 0
    step, record = LADDER[rung], entry.record
    if step.label:
        # Below --min-confidence a label goes to --review-topic instead, when there is one (same key and headers).
        review = bool(settings.review_topic) and codec.low_confidence(outcome, settings.min_confidence)
        body = codec.output_body(record_id=entry.decoded.id, prediction=outcome, model_id=model_id,
                                 source=entry.source, min_confidence=settings.min_confidence, for_review=review)
        if settings.replay_job:  # `lstm-worker replay`: told apart from the live worker's labels
            body["replay"] = {"job": settings.replay_job}
        return Message(entry, outcome, rung, settings.review_topic if review else settings.output_topic, record.key,
                       codec.to_json(body).encode("utf-8"), codec.output_headers(record.headers, model_id),
                       model=model_id)
    rejection = outcome if isinstance(outcome, codec.Rejection) else _OUTPUT_TOO_LARGE
    headers = codec.dead_letter_headers(record.headers if step.keep_headers else [], rejection, entry.source)
    value = record.value
    if value is not None and len(value) > _bytes(step.cut_above, settings):
        headers.append((TRUNCATED_HEADER, str(len(value)).encode("ascii")))
        value = value[: _bytes(step.cut_to, settings)]
    if not step.keep_headers and record.headers:
        headers.append((HEADERS_DROPPED_HEADER, str(len(record.headers)).encode("ascii")))
    key = record.key
    if not step.keep_key and key:
        headers.append((KEY_DROPPED_HEADER, str(len(key)).encode("ascii")))
        key = None
    return Message(entry, outcome, rung, settings.dlq_topic, key, value, headers)


def smaller(message: Message, settings: WorkerSettings) -> Message:
    """The same record's message one rung down; the caller checks :attr:`Message.smallest` first.

    Every rung below the first is a dead letter, which names no model.
    """
    return render(message.entry, message.outcome, settings, "", message.rung + 1)


def _bytes(size: int | str, settings: WorkerSettings) -> int:
    return getattr(settings, size) if isinstance(size, str) else size
