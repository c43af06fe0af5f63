"""The streaming loop: two threads joined by a queue, acks driving commits.

- The *consumer thread* (the caller of :meth:`WorkerLoop.run`) owns the Kafka
  consumer: it polls, registers every record with the offset tracker, decodes
  and tokenises, sends dead letters, commits what is safe, and pauses fetching
  when too many records are in flight (backpressure). Because it never runs
  inference, poll() is called often and max.poll.interval is never at risk.
- The *inference thread* batches work items (count / time / token budget),
  runs ONNX Runtime (which releases the GIL, so tokenising the next records
  overlaps with it) and sends the labels asynchronously, in input order.
- Producer acks (on kafka-python's I/O thread) acknowledge records in the
  tracker; the consumer thread commits the lowest unacknowledged offsets.

A record that cannot be decoded is dead-lettered without touching its
batch-mates; if inference fails on a batch, it is bisected until the failing
record is alone, and only that one is dead-lettered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker import codec
from worker.batcher import Batcher
from worker.exceptions import InferenceError
from worker.health import HealthState
from worker.kafka_io import InputRecord, RebalanceHooks, SendFuture
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker, Ticket
from worker.settings import WorkerSettings


class Source(Protocol):
    def subscribe(self, hooks: RebalanceHooks) -> None: ...
    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]: ...
    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def lag(self) -> dict[TopicPartition, int]: ...
    def close(self) -> None: ...


class Sink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> SendFuture: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self, timeout_s: float) -> None: ...


class Engine(Protocol):
    def token_ids(self, text: str) -> list[int]: ...
    def predict_proba(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray: ...
    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1) -> list: ...


@dataclass(frozen=True)
class WorkItem:
    record: InputRecord
    ticket: Ticket
    source: codec.SourceRef
    record_id: Any
    token_ids: list[int]


class WorkerLoop:
    def __init__(self, settings: WorkerSettings, engine: Engine, source: Source, sink: Sink, *, model_id: str,
                 metrics: WorkerMetrics | None = None, health: HealthState | None = None, log: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.engine, self.source, self.sink = settings, engine, source, sink
        self.model_id = model_id
        self.metrics = metrics or WorkerMetrics()
        self.health = health or HealthState()
        self.log = log if log is not None else _NullLog()
        self.clock = clock
        self.tracker = OffsetTracker()
        self.work: queue.Queue[WorkItem] = queue.Queue()  # bounded by settings.in_flight_limit via pause()
        self._stop = threading.Event()
        self._input_closed = threading.Event()
        self._drain_deadline = float("inf")
        self._fatal: str | None = None
        self._paused = False
        self._resume_all = False
        self._rebalancing = False  # between a revocation and the next assignment
        self._stopped_at: float | None = None
        self._last_commit = 0.0
        self._last_lag = 0.0

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Only sets a flag: safe from a signal handler."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 after a clean drain)."""
        self.source.subscribe(self)
        inference = threading.Thread(target=self._inference_main, name="inference", daemon=True)
        inference.start()
        try:
            while not self._stop.is_set():
                self.health.beat()
                if self.tracker.failure or self._fatal or not inference.is_alive():
                    self._fatal = self._fatal or self.tracker.failure or "inference thread stopped"
                    break
                self._poll_once()
                self._maybe_commit()
                self._maybe_update_lag()
            self._stopped_at = self.clock()
            self._finish_rebalance_before_leaving()
        except Exception as exc:  # a bug or an unexpected broker error: drain what we can, exit non-zero
            self._fatal = self._fatal or f"{type(exc).__name__}: {exc}"
            self.log.exception("loop_failed")
        return self._shutdown(inference)

    def _finish_rebalance_before_leaving(self) -> None:
        """If stopped in the middle of a rebalance, let it complete (bounded) before leaving the group.

        Leaving while the group waits for our JoinGroup stalls the other members
        on some brokers (Tansu) until the rebalance timeout; finishing the join
        first costs at most a few seconds and is harmless on any broker.
        """
        if not self._rebalancing or self._fatal:
            return
        deadline = self.clock() + min(self.settings.session_timeout_ms / 1000, self.settings.shutdown_timeout_s / 2)
        self.log.info("shutdown_waits_for_rebalance")
        while self._rebalancing and self.clock() < deadline and not self.tracker.failure:
            self.health.beat()
            self._poll_once()

    def _shutdown(self, inference: threading.Thread) -> int:
        self.health.stopping = True
        self._fatal = self._fatal or self.tracker.failure
        budget = self.settings.shutdown_timeout_s
        deadline = (self._stopped_at or self.clock()) + budget  # one budget for the whole stop, waits included
        self.log.info("shutdown_started", in_flight=self.tracker.pending_count(), budget_s=budget)
        self._drain_deadline = deadline
        self._input_closed.set()
        inference.join(max(0.0, deadline - self.clock()))
        try:
            self.sink.flush(max(0.1, deadline - self.clock()))
        except KafkaError as exc:
            self.log.warning("flush_failed", error=str(exc))
        self._commit()
        unfinished = self.tracker.pending_count()
        try:
            self.source.close()
        finally:
            self.sink.close(max(0.1, deadline - self.clock()))
        if self._fatal:
            self.log.error("worker_failed", error=self._fatal, uncommitted=unfinished)
            return 1
        self.log.info("shutdown_complete", uncommitted=unfinished)
        return 0

    # -- consumer thread -------------------------------------------------------------------------------
    def _poll_once(self) -> None:
        limit = self.settings.in_flight_limit
        if self._resume_all:
            self._resume_all = False
            self.source.resume()
            self._paused = False
            self.metrics.paused.set(0)
        in_flight = self.tracker.pending_count()
        self.metrics.in_flight.set(in_flight)
        if not self._paused and in_flight >= limit:
            self.source.pause()
            self._paused = True
            self.metrics.paused.set(1)
        elif self._paused and in_flight <= limit // 2:
            self.source.resume()
            self._paused = False
            self.metrics.paused.set(0)
        # Polling continues while paused: it keeps the group membership and max.poll.interval alive.
        records = self.source.poll(timeout_ms=100, max_records=max(1, limit - in_flight))
        for record in records:
            self._accept(record)

    def _accept(self, record: InputRecord) -> None:
        ticket = self.tracker.register(record.tp, record.offset)
        if ticket is None:  # its partition was revoked meanwhile; the next owner reads it from the commit
            self.metrics.dropped_revoked.inc()
            return
        self.metrics.records_in.inc()
        ref = codec.SourceRef(record.topic, record.partition, record.offset)
        s = self.settings
        decoded = codec.decode_value(record.value, record.key, ref, input_format=s.input_format,
                                     text_field=s.text_field, max_message_bytes=s.max_message_bytes)
        if isinstance(decoded, codec.Rejection):
            self._dead_letter(record, ticket, ref, decoded)
            return
        self.work.put(WorkItem(record, ticket, ref, decoded.id, self.engine.token_ids(decoded.text)))

    def _maybe_commit(self) -> None:
        now = self.clock()
        if now - self._last_commit >= self.settings.commit_interval_ms / 1000:
            self._last_commit = now
            self._commit()

    def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        offsets = self.tracker.committable(partitions)
        if not offsets:
            return
        try:
            self.source.commit(offsets)
        except KafkaError as exc:  # CommitFailed / RebalanceInProgress: the next owner re-reads, never skips
            self.metrics.commits.labels("failed").inc()
            self.log.warning("commit_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels("ok").inc()

    def _maybe_update_lag(self) -> None:
        now = self.clock()
        if now - self._last_lag < 5.0:
            return
        self._last_lag = now
        for tp, lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    # -- rebalance hooks (called on the consumer's I/O thread, see kafka_io._Listener) ------------------
    def prepare_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Push buffered sends out so their acks count, then say what is safe to commit."""
        try:
            # Bounded: heartbeats wait while this runs; unacknowledged records are simply re-read by the next owner.
            self.sink.flush(min(5.0, self.settings.session_timeout_ms / 3000))
        except KafkaError as exc:
            self.log.warning("flush_on_revoke_failed", error=str(exc))
        return self.tracker.committable(partitions)

    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.tracker.resume_offsets(partitions)

    def finish_revoke(self, partitions: list[TopicPartition], committed: dict[TopicPartition, int] | None,
                      error: Exception | None) -> None:
        if committed:
            self.tracker.mark_committed(committed)
            self.metrics.commits.labels("ok").inc()
        if error is not None:
            self.metrics.commits.labels("failed").inc()
            self.log.warning("commit_on_revoke_failed", error=f"{type(error).__name__}: {error}")
        self._forget(partitions)
        self._rebalancing = True
        if partitions:
            self.log.info("partitions_revoked", partitions=_names(partitions), committed=_names_offsets(committed))

    def lost(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self._rebalancing = True
        self.log.warning("partitions_lost", partitions=_names(partitions))

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self.tracker.assign(partitions)
        self._rebalancing = False
        # kafka-python keeps the paused flag of retained partitions: the consumer thread resumes them all
        # on its next iteration, then backpressure is re-evaluated from scratch.
        self._resume_all = True
        assigned = len(self.source.assignment())
        self.health.assigned = assigned
        self.metrics.assigned_partitions.set(assigned)
        self.log.info("partitions_assigned", partitions=_names(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Drop in-flight state; later acks of these records are ignored, queued ones are skipped."""
        self.tracker.revoke(partitions)
        for tp in partitions:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # no lag was reported for it yet
        self.health.assigned = max(0, self.health.assigned - len(partitions))

    # -- inference thread ------------------------------------------------------------------------------
    def _inference_main(self) -> None:
        s = self.settings
        batcher: Batcher[WorkItem] = Batcher(self.work, lambda item: len(item.token_ids), s.batch_size,
                                             s.max_wait_ms / 1000, s.max_batch_tokens)
        try:
            while True:
                if self._input_closed.is_set() and self.clock() > self._drain_deadline:
                    return
                batch = batcher.next_batch(idle_timeout_s=0.05)
                if batch is None:
                    if self._input_closed.is_set():
                        return  # stopped and drained
                    continue
                self.process_batch(batch.items, batch.tokens)
        except Exception as exc:
            self._fatal = f"inference thread failed: {type(exc).__name__}: {exc}"
            self.log.exception("inference_failed")
            self._stop.set()

    def process_batch(self, items: list[WorkItem], tokens: int) -> None:
        live = [item for item in items if self.tracker.is_current(item.ticket)]
        if len(live) < len(items):
            self.metrics.dropped_revoked.inc(len(items) - len(live))
        if not live:
            return
        self.metrics.batch_size.observe(len(live))
        self.metrics.batch_tokens.observe(tokens)
        results = self._infer(live)
        good = [(item, probs) for item, probs in results if not isinstance(probs, codec.Rejection)]
        predictions = iter(self.engine.to_predictions(np.stack([p for _, p in good]), self.settings.top_k)
                           if good else [])
        for item, outcome in results:  # input order: per partition, labels are sent in offset order
            if isinstance(outcome, codec.Rejection):
                self._dead_letter(item.record, item.ticket, item.source, outcome)
            else:
                self._send_label(item, next(predictions))

    def _infer(self, items: list[WorkItem]) -> list[tuple[WorkItem, np.ndarray | codec.Rejection]]:
        """Score ``items``; on failure bisect so that only the record that breaks inference is rejected."""
        start = time.perf_counter()
        try:
            probs = self.engine.predict_proba([item.token_ids for item in items])
        except InferenceError as exc:
            if len(items) == 1:
                self.log.warning("inference_rejected_record", source=items[0].source.as_id(), error=str(exc))
                return [(items[0], codec.Rejection(codec.INFERENCE_ERROR, str(exc)))]
            middle = len(items) // 2
            return self._infer(items[:middle]) + self._infer(items[middle:])
        self.metrics.inference_seconds.observe(time.perf_counter() - start)
        return list(zip(items, probs, strict=True))

    # -- sending (both threads) ------------------------------------------------------------------------
    def _send_label(self, item: WorkItem, prediction: Any) -> None:
        value = codec.encode_output(record_id=item.record_id, label=prediction.label, score=prediction.score,
                                    top_k=prediction.top_k, model_id=self.model_id, source=item.source)
        headers = codec.output_headers(item.record.headers, self.model_id)
        self._send(self.settings.output_topic, item.record, item.ticket, value, headers, None)

    def _dead_letter(self, record: InputRecord, ticket: Ticket, ref: codec.SourceRef,
                     rejection: codec.Rejection) -> None:
        headers = codec.dead_letter_headers(record.headers, rejection, ref)
        value = record.value
        if value is not None and len(value) > self.settings.max_dead_letter_bytes:
            # Too big for our producer: keep the head, say so. Re-sending it whole would fail every restart.
            headers += [("error.value_truncated", str(len(value)).encode("ascii"))]
            value = value[: self.settings.max_message_bytes]
        self._send(self.settings.dlq_topic, record, ticket, value, headers, rejection.reason)

    def _send(self, topic: str, record: InputRecord, ticket: Ticket, value: bytes | None,
              headers: list[tuple[str, bytes]], reason: str | None) -> None:
        try:
            future = self.sink.send(topic, record.key, value, headers)
        except KafkaError as exc:
            self._send_failed(ticket, exc)
            return
        future.add_callback(self._send_acked, ticket, record.timestamp_ms, reason)
        future.add_errback(self._send_failed, ticket)

    def _send_acked(self, ticket: Ticket, timestamp_ms: int, reason: str | None, _metadata: Any) -> None:
        if not self.tracker.ack(ticket):
            return
        if reason is None:
            self.metrics.records_out.inc()
            if timestamp_ms and timestamp_ms > 0:
                self.metrics.end_to_end_seconds.observe(max(0.0, time.time() - timestamp_ms / 1000))
        else:
            self.metrics.dead_letters.labels(reason).inc()

    def _send_failed(self, ticket: Ticket, exc: BaseException) -> None:
        self.metrics.send_errors.inc()
        self.tracker.fail(ticket, f"{type(exc).__name__}: {exc}")
        self.log.error("send_failed", partition=str(ticket.partition), offset=ticket.offset, error=str(exc))
        self._stop.set()


class _NullLog:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def _names_offsets(offsets: dict[TopicPartition, int] | None) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": o for tp, o in (offsets or {}).items()}
