"""What the worker produces: one label or one dead letter per record, and what happens when one is too large.

A label too large for the producer or the broker (an input with huge headers,
say) is replaced by a dead letter of the input with reason
``output_too_large``. A dead letter that is itself too large is sent again,
smaller each time (see ``_SHRINK_STEPS``), with headers saying what was cut,
so a record never blocks its partition just because of its size.
"""

from __future__ import annotations

import time
from typing import Any

from worker import codec
from worker.kafka_io import InputRecord
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker, Ticket
from worker.pipeline.delivery import Delivery, Outgoing
from worker.pipeline.ports import Sink
from worker.settings import WorkerSettings

TRUNCATED_HEADER = "error.value_truncated"
HEADERS_DROPPED_HEADER = "error.headers_dropped"
KEY_DROPPED_HEADER = "error.key_dropped"
_SMALL_VALUE_BYTES = 64 * 1024


def _shrink_steps(settings: WorkerSettings) -> list[tuple[int, int, bool, bool]]:
    """Forms of a dead letter, tried in turn while the broker refuses it as too large.

    Each is (cut the value above this size, cut it to this size, keep the input's headers, keep its key).
    The first form is the one sent first: the producer cannot carry values above max_dead_letter_bytes,
    and re-sending one whole would fail on every restart.
    """
    keep = settings.max_message_bytes
    return [(settings.max_dead_letter_bytes, keep, True, True), (keep, keep, True, True),
            (_SMALL_VALUE_BYTES, _SMALL_VALUE_BYTES, False, True), (0, 0, False, False)]


class Publisher:
    def __init__(self, settings: WorkerSettings, sink: Sink, tracker: OffsetTracker, metrics: WorkerMetrics, *,
                 model_id: str, log: Any, clock: Any = time.monotonic):
        self.settings, self.tracker, self.metrics = settings, tracker, metrics
        self.model_id, self.log = model_id, log
        self._shrink = _shrink_steps(settings)
        self.delivery = Delivery(sink, on_acked=self._acked, is_current=tracker.is_current, metrics=metrics, log=log,
                                 backoff_initial_s=settings.send_retry_backoff_s,
                                 backoff_max_s=settings.send_retry_backoff_max_s, clock=clock)

    def label(self, record: InputRecord, ticket: Ticket, source: codec.SourceRef, record_id: Any,
              prediction: Any) -> None:
        value = codec.encode_output(record_id=record_id, label=prediction.label, score=prediction.score,
                                    top_k=prediction.top_k, model_id=self.model_id, source=source)
        headers = codec.output_headers(record.headers, self.model_id)

        def too_large(exc: BaseException) -> None:
            size = len(value) + sum(len(k) + len(v) for k, v in headers)
            self.log.warning("output_too_large", source=source.as_id(), bytes=size, error=str(exc))
            message = f"the label with the input's headers is {size} bytes, more than the producer or the " \
                      f"output topic accepts ({type(exc).__name__})"
            self.dead_letter(record, ticket, source, codec.Rejection(codec.OUTPUT_TOO_LARGE, message))

        self.delivery.send(Outgoing(self.settings.output_topic, record, ticket, value, headers, None,
                                    key=record.key, on_too_large=too_large))

    def dead_letter(self, record: InputRecord, ticket: Ticket, source: codec.SourceRef, rejection: codec.Rejection,
                    step: int = 0) -> None:
        cut_above, cut_to, keep_headers, keep_key = self._shrink[step]
        headers = codec.dead_letter_headers(record.headers if keep_headers else [], rejection, source)
        value, key = record.value, record.key if keep_key else None
        if value is not None and len(value) > cut_above:
            headers.append((TRUNCATED_HEADER, str(len(value)).encode("ascii")))
            value = value[:cut_to]
        if not keep_headers and record.headers:
            headers.append((HEADERS_DROPPED_HEADER, str(len(record.headers)).encode("ascii")))
        if not keep_key and record.key:
            headers.append((KEY_DROPPED_HEADER, str(len(record.key)).encode("ascii")))

        def smaller(exc: BaseException) -> None:
            self.log.warning("dead_letter_too_large", source=source.as_id(), step=step + 1, error=str(exc))
            self.dead_letter(record, ticket, source, rejection, step + 1)

        has_smaller = step + 1 < len(self._shrink)
        self.delivery.send(Outgoing(self.settings.dlq_topic, record, ticket, value, headers, rejection.reason,
                                    key=key, on_too_large=smaller if has_smaller else None))

    def _acked(self, message: Outgoing, _metadata: Any) -> None:
        if not self.tracker.ack(message.ticket):
            return  # its partition was revoked meanwhile
        if message.reason is None:
            self.metrics.records_out.inc()
            timestamp_ms = message.record.timestamp_ms
            if timestamp_ms and timestamp_ms > 0:
                self.metrics.end_to_end_seconds.observe(max(0.0, time.time() - timestamp_ms / 1000))
        else:
            self.metrics.dead_letters.labels(message.reason).inc()
