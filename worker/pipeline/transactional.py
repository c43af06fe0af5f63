"""Exactly-once mode: each batch's labels, dead letters and consumed offsets commit in one Kafka transaction.

One thread does everything, in order: poll → decode and tokenise → close the batch on count, time or
tokens → score with ONNX Runtime → ``begin_transaction`` → send labels and dead letters → wait for their
acknowledgements → ``send_offsets_to_transaction`` (the offsets after the batch, with the consumer's group
metadata) → ``commit_transaction``. Nothing is polled while a transaction is open, and rebalance callbacks
run inside ``poll``, so a rebalance never meets an open transaction.

A failed transaction is aborted, the consumer is rewound to the batch's first offsets (the position of the
last committed transaction) and the batch is read and scored again after a back-off. After
:data:`MAX_ATTEMPTS` failures in a row the worker exits 1; a restart resumes from the last committed
transaction. A fenced producer (another process registered the same transactional id) exits 1 at once:
the work belongs to its successor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker import codec
from worker.exceptions import InferenceError
from worker.health import HealthState
from worker.kafka_io import InputRecord
from worker.metrics import WorkerMetrics
from worker.pipeline import result_forms as forms
from worker.pipeline.common import LagReporter, NullLog, partition_names, partition_offsets
from worker.pipeline.open_batch import Entry, OpenBatch
from worker.settings import WorkerSettings

MAX_ATTEMPTS = 5  # failed transactions in a row before the worker gives up
BACKOFF_BASE_S = 0.5  # doubles after each failed transaction: 0.5, 1, 2, 4 s
SEND_TIMEOUT_S = 30.0


class Fenced(Exception):
    """Another producer registered this transactional id; this worker must stop."""


class GaveUp(Exception):
    """Transactions kept failing; a restart resumes from the last committed one."""


class TransactionalLoop:
    def __init__(self, settings: WorkerSettings, engine: Any, source: Any, sink: Any, *, model_id: str,
                 metrics: WorkerMetrics | None = None, health: HealthState | None = None, log: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.engine, self.source, self.sink = settings, engine, source, sink
        self.model_id = model_id
        self.metrics = metrics or WorkerMetrics()
        self.health = health or HealthState()
        self.log = log if log is not None else NullLog()
        self.clock = clock
        self.batch = OpenBatch()
        self._owned: set[TopicPartition] = set()
        self._stop = threading.Event()
        self._in_transaction = False
        self._failures = 0
        self.lag = LagReporter(source, self.metrics, clock)
        self.backoff_base_s = BACKOFF_BASE_S
        self._forms: dict[codec.SourceRef, int] = {}  # records the broker refused as too large: their next form

    def request_stop(self) -> None:
        """Only sets a flag: safe from a signal handler."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 after a clean stop)."""
        self.source.subscribe(self)
        code = 0
        try:
            while not self._stop.is_set():
                self.health.beat()
                self._poll_once()
                s = self.settings
                if self.batch.closed_by(self.clock(), s.batch_size, s.max_wait_ms / 1000, s.max_batch_tokens):
                    self._complete_batch()
                self.lag.maybe_update()
            if len(self.batch):  # stopping: the open batch is small, commit it rather than re-read it
                self._complete_batch()
        except Fenced as exc:
            code = 1
            self.log.error("producer_fenced", transactional_id=self.settings.transactional_id, error=str(exc),
                           hint="another worker started with this transactional id and took over; "
                                "give each replica its own --transactional-id")
        except GaveUp as exc:
            code = 1
            self.log.error("worker_failed", error=str(exc), resume="from the last committed transaction")
        except Exception as exc:  # a bug or an unexpected broker error: nothing uncommitted counts
            code = 1
            self.log.exception("loop_failed", error=f"{type(exc).__name__}: {exc}")
        self.health.stopping = True
        try:
            self.source.close()
        finally:
            self.sink.close(self.settings.shutdown_timeout_s / 2)
        self.log.info("shutdown_complete" if code == 0 else "shutdown_after_failure", exit_code=code)
        return code

    # -- consuming -----------------------------------------------------------------------------------------
    def _poll_once(self) -> None:
        s = self.settings
        if len(self.batch):
            waited_ms = (self.clock() - self.batch.opened_at) * 1000
            timeout_ms = int(max(0, s.max_wait_ms - waited_ms))
        else:
            timeout_ms = 100
        now = self.clock()
        for record in self.source.poll(timeout_ms=timeout_ms, max_records=max(1, s.batch_size - len(self.batch))):
            if record.tp not in self._owned:  # returned after its revocation; its new owner reads it
                self.metrics.dropped_revoked.inc()
                continue
            self.metrics.records_in.inc()
            self.batch.add(self._decode(record), now)

    def _decode(self, record: InputRecord) -> Entry:
        s = self.settings
        ref = codec.SourceRef(record.topic, record.partition, record.offset)
        decoded = codec.decode_value(record.value, record.key, ref, input_format=s.input_format,
                                     text_field=s.text_field, max_message_bytes=s.max_message_bytes)
        ids = self.engine.token_ids(decoded.text) if isinstance(decoded, codec.Decoded) else []
        return Entry(record, ref, decoded, ids)

    # -- one batch, one transaction ------------------------------------------------------------------------
    def _complete_batch(self) -> None:
        batch, self.batch = self.batch, OpenBatch()
        outcomes = self._score(batch.entries)
        try:
            reasons = self._commit_in_transaction(batch, outcomes)
        except KafkaError as exc:
            fencing = self.sink.fencing_error(exc)
            if fencing is not None:
                raise Fenced(f"{type(fencing).__name__}: {fencing}") from exc
            self._abort_and_rewind(batch, exc)
            return
        self._failures = 0
        for entry in batch.entries:
            self._forms.pop(entry.source, None)
        self.metrics.commits.labels("ok").inc()
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(batch.tokens)
        now = time.time()
        for entry, reason in zip(batch.entries, reasons, strict=True):
            if reason is not None:
                self.metrics.dead_letters.labels(reason).inc()
                continue
            self.metrics.records_out.inc()
            if entry.record.timestamp_ms > 0:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - entry.record.timestamp_ms / 1000))

    def _commit_in_transaction(self, batch: OpenBatch, outcomes: list[Any]) -> list[str | None]:
        """Send every result and the offsets after the batch in one transaction; the dead-letter reasons sent."""
        self.sink.begin()
        self._in_transaction = True
        sent = [self._send(entry, outcome) for entry, outcome in zip(batch.entries, outcomes, strict=True)]
        # Offsets join the transaction only once every result is acknowledged: a send that failed after the
        # producer's retries must abort the batch, never commit past it.
        self.sink.flush(SEND_TIMEOUT_S)
        failed = None
        for entry, (form, _, future) in zip(batch.entries, sent, strict=True):
            if future.failed() or not future.is_done:
                failed = failed or future.exception or KafkaError("send not acknowledged")
                if isinstance(future.exception, forms.TOO_LARGE_ERRORS) and form < forms.MINIMAL_DEAD_LETTER:
                    self._forms[entry.source] = form + 1  # refused by the broker: the retry sends it smaller
        if failed is not None:
            raise failed if isinstance(failed, KafkaError) else KafkaError(f"send failed: {failed}")
        self.sink.send_offsets(batch.next_offsets(), self.source.group_metadata())
        self.sink.commit()
        self._in_transaction = False
        return [message.reason for _, message, _ in sent]

    def _abort_and_rewind(self, batch: OpenBatch, error: KafkaError) -> None:
        self.metrics.commits.labels("aborted").inc()
        self._failures += 1
        self._abort()
        rewind = batch.first_offsets(self._owned)
        self.source.seek(rewind)
        self.log.warning("transaction_aborted", error=f"{type(error).__name__}: {error}", attempt=self._failures,
                         records=len(batch), rewound_to=partition_offsets(rewind))
        if self._failures >= MAX_ATTEMPTS:
            raise GaveUp(f"{self._failures} transactions in a row aborted; last error: "
                         f"{type(error).__name__}: {error}")
        # A stop request cuts the back-off short.
        self._stop.wait(min(self.backoff_base_s * 2 ** (self._failures - 1), 10.0))

    def _abort(self) -> None:
        if not self._in_transaction:
            return
        try:
            self.sink.abort()
        except KafkaError as exc:
            fencing = self.sink.fencing_error(exc)
            if fencing is not None:
                raise Fenced(f"{type(fencing).__name__}: {fencing}") from exc
            raise GaveUp(f"cannot abort the transaction ({type(exc).__name__}: {exc})") from exc
        finally:
            self._in_transaction = False

    # -- scoring and encoding ------------------------------------------------------------------------------
    def _score(self, entries: list[Entry]) -> list[Any]:
        """Per entry, a prediction or a rejection; inference failures are bisected down to the failing record."""
        outcomes: list[Any] = [e.decoded if isinstance(e.decoded, codec.Rejection) else None for e in entries]
        scorable = [i for i, e in enumerate(entries) if outcomes[i] is None]
        probabilities = self._infer([entries[i] for i in scorable])
        good = [(i, p) for i, p in zip(scorable, probabilities, strict=True) if not isinstance(p, codec.Rejection)]
        predictions = (self.engine.to_predictions(np.stack([p for _, p in good]), self.settings.top_k)
                       if good else [])
        for (i, _), prediction in zip(good, predictions, strict=True):
            outcomes[i] = prediction
        for i, p in zip(scorable, probabilities, strict=True):
            if isinstance(p, codec.Rejection):
                outcomes[i] = p
        return outcomes

    def _infer(self, entries: list[Entry]) -> list[Any]:
        if not entries:
            return []
        start = time.perf_counter()
        try:
            probabilities = self.engine.predict_proba([e.token_ids for e in entries])
        except InferenceError as exc:
            if len(entries) == 1:
                self.log.warning("inference_rejected_record", source=entries[0].source.as_id(), error=str(exc))
                return [codec.Rejection(codec.INFERENCE_ERROR, str(exc))]
            middle = len(entries) // 2
            return self._infer(entries[:middle]) + self._infer(entries[middle:])
        self.metrics.inference_seconds.observe(time.perf_counter() - start)
        return list(probabilities)

    def _send(self, entry: Entry, outcome: Any) -> tuple[int, forms.Message, Any]:
        """Send ``entry``'s result in the largest form the producer takes: (form, message, future)."""
        form = self._forms.get(entry.source, forms.first_form(outcome))
        while True:
            message = forms.render(entry, outcome, form, self.settings, self.model_id)
            try:
                return form, message, self.sink.send(message.topic, message.key, message.value, message.headers)
            except forms.TOO_LARGE_ERRORS as exc:  # refused before it was queued: the smaller form joins at once
                if form >= forms.MINIMAL_DEAD_LETTER:
                    raise
                self.log.warning("output_too_large" if form == forms.LABEL else "dead_letter_too_large",
                                 source=entry.source.as_id(), error=str(exc))
                form += 1

    # -- rebalance hooks (kafka_io._Listener, on the consumer's I/O thread while run() is inside poll) -------
    def prepare_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}  # offsets are committed inside transactions only

    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.batch.first_offsets(set(partitions))

    def finish_revoke(self, partitions: list[TopicPartition], committed: Any, error: Exception | None) -> None:
        self._release(partitions, "partitions_revoked")

    def lost(self, partitions: list[TopicPartition]) -> None:
        self._release(partitions, "partitions_lost")

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self._owned.update(partitions)
        self.health.assigned = len(self._owned)
        self.metrics.assigned_partitions.set(len(self._owned))
        self.log.info("partitions_assigned", partitions=partition_names(partitions))

    def _release(self, partitions: list[TopicPartition], event: str) -> None:
        """Nothing past the last committed transaction survives a revocation: open work is dropped."""
        self._abort()  # never open while polling; kept so a revocation can never commit past it
        released = set(partitions)
        dropped = self.batch.drop(released)
        self.metrics.dropped_revoked.inc(dropped)
        self._owned -= released
        self.health.assigned = len(self._owned)
        self.metrics.assigned_partitions.set(len(self._owned))
        self.log.info(event, partitions=partition_names(partitions), dropped=dropped)
