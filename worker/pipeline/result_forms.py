"""What the exactly-once loop sends for one record: its label, or a dead letter, smaller while it is too large.

The same rules as the at-least-once publisher (:mod:`worker.pipeline.publish`): a label too large for the
producer or the output topic becomes an ``output_too_large`` dead letter, and a dead letter that is still
too large is sent with neither value, input headers nor key, so that a record never blocks its partition
just because of its size. Pure functions: the loop picks the form, these build the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from worker import codec
from worker.pipeline.open_batch import Entry
from worker.pipeline.publish import HEADERS_DROPPED_HEADER, KEY_DROPPED_HEADER, TRUNCATED_HEADER
from worker.settings import WorkerSettings

LABEL, DEAD_LETTER, MINIMAL_DEAD_LETTER = 0, 1, 2
TOO_LARGE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str | None  # the dead-letter reason; None for a label


def first_form(outcome: Any) -> int:
    return DEAD_LETTER if isinstance(outcome, codec.Rejection) else LABEL


def render(entry: Entry, outcome: Any, form: int, settings: WorkerSettings, model_id: str) -> Message:
    """The message for ``entry`` in ``form``; ``outcome`` is its prediction or its rejection."""
    record = entry.record
    if form == LABEL:
        value = codec.encode_output(record_id=entry.decoded.id, label=outcome.label, score=outcome.score,
                                    top_k=outcome.top_k, model_id=model_id, source=entry.source)
        return Message(settings.output_topic, record.key, value, codec.output_headers(record.headers, model_id),
                       None)
    rejection = outcome if isinstance(outcome, codec.Rejection) else codec.Rejection(
        codec.OUTPUT_TOO_LARGE, "the label with the input's headers is more than the producer or the output "
                                "topic accepts")
    if form == DEAD_LETTER:
        headers = codec.dead_letter_headers(record.headers, rejection, entry.source)
        value = record.value
        if value is not None and len(value) > settings.max_dead_letter_bytes:
            headers.append((TRUNCATED_HEADER, str(len(value)).encode("ascii")))
            value = value[: settings.max_message_bytes]
        return Message(settings.dlq_topic, record.key, value, headers, rejection.reason)
    headers = codec.dead_letter_headers([], rejection, entry.source)
    if record.value:
        headers.append((TRUNCATED_HEADER, str(len(record.value)).encode("ascii")))
    if record.headers:
        headers.append((HEADERS_DROPPED_HEADER, str(len(record.headers)).encode("ascii")))
    if record.key:
        headers.append((KEY_DROPPED_HEADER, str(len(record.key)).encode("ascii")))
    return Message(settings.dlq_topic, None, b"", headers, rejection.reason)
