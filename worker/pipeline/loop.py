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
- Sends go through :mod:`worker.pipeline.publish` and
  :mod:`worker.pipeline.delivery`: a send the broker refuses is retried with
  backoff (a *send-retry* thread), holding later sends behind it, while this
  loop pauses fetching and reports not-ready; it never stops the worker.

A record that cannot be decoded is dead-lettered without touching its
batch-mates; if inference fails on a batch, it is bisected until the failing
record is alone, and only that one is dead-lettered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker import codec
from worker.batcher import Batcher
from worker.exceptions import InferenceError
from worker.health import HealthState
from worker.kafka_io import InputRecord
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.common import LagReporter, NullLog
from worker.pipeline.ports import Engine, Sink, Source, WorkItem
from worker.pipeline.publish import Publisher
from worker.pipeline.rebalance import RebalanceHandling
from worker.settings import WorkerSettings


class WorkerLoop(RebalanceHandling):
    def __init__(self, settings: WorkerSettings, engine: Engine, source: Source, sink: Sink, *, model_id: str,
                 metrics: WorkerMetrics | None = None, health: HealthState | None = None, log: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.engine, self.source, self.sink = settings, engine, source, sink
        self.model_id = model_id
        self.metrics = metrics or WorkerMetrics()
        self.health = health or HealthState()
        self.log = log if log is not None else NullLog()
        self.clock = clock
        self.tracker = OffsetTracker()
        self.publisher = Publisher(settings, sink, self.tracker, self.metrics, model_id=model_id, log=self.log,
                                   clock=clock)
        self.delivery = self.publisher.delivery
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
        self.lag = LagReporter(source, self.metrics, clock)

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Only sets a flag: safe from a signal handler."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 after a clean drain)."""
        self.source.subscribe(self)
        self.delivery.start()
        inference = threading.Thread(target=self._inference_main, name="inference", daemon=True)
        inference.start()
        try:
            while not self._stop.is_set():
                self.health.beat()
                if self.delivery.fatal or self._fatal or not inference.is_alive():
                    self._fatal = self._fatal or self.delivery.fatal or "inference thread stopped"
                    break
                self._poll_once()
                self._maybe_commit()
                self.lag.maybe_update()
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
        while self._rebalancing and self.clock() < deadline and not self.delivery.fatal:
            self.health.beat()
            self._poll_once()

    def _shutdown(self, inference: threading.Thread) -> int:
        self.health.stopping = True
        self._fatal = self._fatal or self.delivery.fatal
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
        # Sends still held behind a failed one stay unacknowledged: the commit stops before them.
        self.delivery.close(max(0.1, min(1.0, deadline - self.clock())))
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
        # While a send is stuck, more input would only queue up behind it.
        self.health.send_problem = stuck = self.delivery.problem()
        if not self._paused and (in_flight >= limit or stuck):
            self.source.pause()
            self._paused = True
            self.metrics.paused.set(1)
        elif self._paused and in_flight <= limit // 2 and not stuck:
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
            self.publisher.dead_letter(record, ticket, ref, decoded)
            return
        self.work.put(WorkItem(record, ticket, ref, decoded.id, self.engine.token_ids(decoded.text),
                               queued_at=time.monotonic()))

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

    # -- inference thread ------------------------------------------------------------------------------
    def _inference_main(self) -> None:
        s = self.settings
        batcher: Batcher[WorkItem] = Batcher(self.work, lambda item: len(item.token_ids), s.batch_size,
                                             s.max_wait_ms / 1000, s.max_batch_tokens,
                                             arrived_at=lambda item: item.queued_at)
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
                self.publisher.dead_letter(item.record, item.ticket, item.source, outcome)
            else:
                self.publisher.label(item.record, item.ticket, item.source, item.record_id, next(predictions))

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
