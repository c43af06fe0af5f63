"""The worker's one processing loop: poll → decode → batch → infer → render → deliver → commit.

One thread, the caller of :meth:`Pipeline.run`, owns the Kafka consumer and is
the only one that sends. Each turn it handles what the producer reported
(:meth:`Guarantee.service`), pauses or resumes fetching (backpressure), polls,
decodes and tokenises new records into the open batch, and moves the batches on:
a closed batch is scored on the *inference* thread (ONNX Runtime releases the
GIL, so polling and tokenising the next batch overlap with it), and a scored
batch is rendered and handed to the delivery guarantee, which commits. Only one
batch is scored at a time, so results leave in input order.

The loop never waits on inference for long, so ``poll`` comes round well within
``max.poll.interval`` in both modes. Rebalance hooks run while the loop is inside
``poll``; they release revoked partitions (their unanswered records are read
again by the next owner), and a batch scored for a partition revoked meanwhile
is not published. Signal handlers only call :meth:`Pipeline.request_stop`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any

from kafka.structs import TopicPartition

from worker import codec
from worker.health import HealthState
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.batch import OpenBatch
from worker.pipeline.guarantee import Guarantee
from worker.pipeline.lag import LagGauge
from worker.pipeline.messages import Entry, Message, render
from worker.pipeline.models import ModelWatcher, ServedModel, describe
from worker.pipeline.ports import Consumer, InputRecord
from worker.pipeline.scoring import score
from worker.pipeline.shadow import Shadow
from worker.settings import WorkerSettings

IDLE_POLL_MS = 100
SCORING_POLL_MS = 5  # while a batch is scored: come back soon to publish it


class Pipeline:
    def __init__(self, settings: WorkerSettings, served: ServedModel, models: ModelWatcher, consumer: Consumer,
                 guarantee: Guarantee, tracker: OffsetTracker, metrics: WorkerMetrics, health: HealthState, log: Any,
                 shadow: Shadow | None = None):
        self.settings, self.served, self.models, self.consumer = settings, served, models, consumer
        self.shadow = shadow
        self.guarantee, self.tracker, self.metrics, self.health, self.log = guarantee, tracker, metrics, health, log
        self._open = OpenBatch()
        self._scoring: tuple[list[Entry], Future, ServedModel] | None = None
        self._retired: list[ServedModel] = []  # replaced models, closed once the batch they score is done
        self._inference = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._stop = threading.Event()
        self._owned: set[TopicPartition] = set()
        self._paused = False
        self._resume_all = False
        self._lag = LagGauge(consumer, metrics, log)
        guarantee.drift.serve(served.model_id, served.engine.bundle.drift_reference)

    def request_stop(self) -> None:
        """Only sets a flag: safe from a signal handler."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 after a clean drain)."""
        self.consumer.subscribe(self)
        failure = None
        try:
            while not self._stop.is_set() and self.guarantee.fatal is None:
                self.health.beat()
                self.guarantee.service(time.monotonic())
                self._apply_backpressure()
                self._poll()
                self._advance(time.monotonic())
                self.guarantee.maybe_commit(time.monotonic())
                self._report_health()  # a send that just failed shows on /readyz before the lag query waits
                self._lag.maybe_report(time.monotonic(), self._owned)
        except Exception as exc:  # a bug or an unexpected broker error: drain what we can, exit non-zero
            failure = f"{type(exc).__name__}: {exc}"
            self.log.exception("loop_failed")
        return self._shutdown(failure)

    # -- poll, decode, tokenise ------------------------------------------------------------------------
    def _poll(self) -> None:
        s = self.settings
        if self._scoring is not None and (len(self._open) >= s.batch_size or self._open.tokens >= s.max_batch_tokens):
            wait_for([self._scoring[1]], timeout=IDLE_POLL_MS / 1000)  # the next batch is full: let this one finish
            return
        if self._scoring is not None:
            timeout_ms = SCORING_POLL_MS
        else:
            timeout_ms = min(IDLE_POLL_MS, int(self._open.wait_s(time.monotonic(), s.max_wait_ms / 1000) * 1000))
        room = min(s.batch_size - len(self._open), s.in_flight_limit - self.tracker.pending_count())
        now = time.monotonic()
        for record in self.consumer.poll(timeout_ms=timeout_ms, max_records=max(1, room)):
            self._accept(record, now)

    def _accept(self, record: InputRecord, now: float) -> None:
        ticket = self.tracker.register(record.tp, record.offset)
        if ticket is None:  # its partition was revoked meanwhile; the next owner reads it from the commit
            self.metrics.dropped_revoked.inc()
            return
        self.metrics.records_in.inc()
        s = self.settings
        source = codec.SourceRef(record.topic, record.partition, record.offset)
        decoded = codec.decode_value(record.value, record.key, source, input_format=s.input_format,
                                     text_field=s.text_field, max_message_bytes=s.max_message_bytes)
        token_ids: list[int] = []
        if isinstance(decoded, codec.Decoded):
            try:
                token_ids = self.served.engine.token_ids(decoded.text)
            except Exception as exc:  # noqa: BLE001 - one record never stops the worker: dead-letter it
                self.log.exception("tokenise_failed", source=source.as_id())
                decoded = codec.Rejection(codec.INFERENCE_ERROR, f"tokenising failed: {type(exc).__name__}: {exc}")
        self._open.add(Entry(record, ticket, source, decoded, token_ids, now))

    # -- infer, render, deliver ------------------------------------------------------------------------
    def _advance(self, now: float, *, stopping: bool = False) -> None:
        """Publish the scored batch, if it is done, and start scoring the next one when it is closed."""
        if self._scoring is not None and not self._scoring[1].done():
            return
        finished, self._scoring = self._scoring, None
        for retired in self._retired:  # no batch is being scored by them any more
            retired.engine.close()
        self._retired = []
        if not stopping:
            self._switch_model(now)
        s = self.settings
        if self._open.closed_by(now, s.batch_size, s.max_wait_ms / 1000, s.max_batch_tokens) or (
                stopping and len(self._open)):
            batch, self._open = self._open, OpenBatch()
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_tokens.observe(batch.tokens)
            served = self.served
            self._scoring = batch.entries, self._inference.submit(
                score, served.engine, batch.entries, s.top_k, self.metrics, self.log, s.explain), served
        if finished is not None:  # published after the next batch started, so inference keeps running
            entries, future, served = finished
            self._publish(entries, future.result(), served.model_id, now)
        if self.shadow is not None:
            shadow_labels = self.shadow.advance(now, backpressure=self._paused or stopping)
            if shadow_labels:
                self.guarantee.publish_shadow(shadow_labels, now)

    def _switch_model(self, now: float) -> None:
        """At a batch boundary: serve a newly verified model from the next batch on (per partition, old then new)."""
        new = self.models.take_ready(now)
        if new is None:
            return
        old, self.served = self.served, new
        self._retired.append(old)  # closed once the batch it may be scoring is done: two models at most
        # The open batch was tokenised with the old vocabulary.
        reopened = OpenBatch()
        for entry in self._open.entries:
            if isinstance(entry.decoded, codec.Decoded):
                entry = dataclasses.replace(entry, token_ids=new.engine.token_ids(entry.decoded.text))
            reopened.add(entry)
        self._open = reopened
        self.metrics.model_swaps.inc()
        describe(self.metrics, new)
        self.guarantee.drift.serve(new.model_id, new.engine.bundle.drift_reference)  # a fresh window
        old_labels, new_labels = old.engine.labels, new.engine.labels
        self.log.info("model_swapped", old=old.model_id, new=new.model_id, version=new.version,
                      labels_changed=old_labels != new_labels)
        if old_labels != new_labels:
            self.log.warning("model_labels_changed", added=sorted(set(new_labels) - set(old_labels)),
                             removed=sorted(set(old_labels) - set(new_labels)))

    def _publish(self, entries: list[Entry], outcomes: list[Any], model_id: str, now: float) -> None:
        messages: list[Message] = []
        live = [(entry, outcome) for entry, outcome in zip(entries, outcomes, strict=True)
                if self.tracker.is_current(entry.ticket)]
        self.metrics.dropped_revoked.inc(len(entries) - len(live))  # revoked while they were scored
        for entry, outcome in live:
            try:
                messages.append(render(entry, outcome, self.settings, model_id))
            except (ValueError, UnicodeError) as exc:  # e.g. a model that answers NaN: dead-letter, never stop
                rejection = codec.Rejection(codec.INFERENCE_ERROR, f"the label cannot be rendered: {exc}")
                messages.append(render(entry, rejection, self.settings, model_id))
        self.guarantee.publish(messages, now)
        if self.shadow is not None and live:
            self.shadow.offer([entry for entry, _ in live], [outcome for _, outcome in live])

    # -- backpressure, lag -----------------------------------------------------------------------------
    def _apply_backpressure(self) -> None:
        if self._resume_all:
            self._resume_all = False
            self.consumer.resume()
            self._set_paused(False)
        in_flight = self.tracker.pending_count()
        self.metrics.in_flight.set(in_flight)
        problem = self._report_health()  # while results cannot get out, more input would only queue behind them
        limit = self.settings.in_flight_limit
        if not self._paused and (in_flight >= limit or problem):
            self.consumer.pause()
            self._set_paused(True)
        elif self._paused and in_flight <= limit // 2 and not problem:
            self.consumer.resume()
            self._set_paused(False)

    def _report_health(self) -> str | None:
        """Why results are not getting out (None while they flow), on /readyz and in lstm_worker_ready."""
        self.health.send_problem = problem = self.guarantee.problem()
        self.metrics.ready.set(1 if self.health.ready()[0] else 0)
        return problem

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self.metrics.paused.set(1 if paused else 0)

    # -- rebalance hooks (worker.kafka_io.RebalanceListener, while the loop is inside poll) ----------------
    def offsets_to_commit(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.guarantee.offsets_to_commit(partitions)

    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.tracker.resume_offsets(partitions)

    def release(self, partitions: list[TopicPartition], *, lost: bool, committed: dict[TopicPartition, int] | None,
                error: Exception | None) -> None:
        """Forget the partitions: their unanswered records are dropped everywhere and read again by the next owner."""
        if committed:
            self.tracker.mark_committed(committed)
            self.metrics.commits.labels("ok").inc()
        if error is not None:
            self.metrics.commits.labels("failed").inc()
            self.log.warning("commit_on_revoke_failed", error=f"{type(error).__name__}: {error}")
        self.tracker.revoke(partitions)
        dropped = self._open.drop(set(partitions))
        self.metrics.dropped_revoked.inc(dropped)
        self._owned -= set(partitions)
        self._lag.forget(partitions)
        self._report_assigned()
        report = self.log.warning if lost else self.log.info
        report("partitions_lost" if lost else "partitions_revoked", partitions=_names(partitions), dropped=dropped,
               committed={f"{tp.topic}[{tp.partition}]": offset for tp, offset in (committed or {}).items()})

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self.tracker.assign(partitions)
        self._owned |= set(partitions)
        # kafka-python keeps the paused flag of retained partitions: the loop resumes them all on its next turn,
        # then backpressure is decided afresh.
        self._resume_all = True
        self._report_assigned()
        self.log.info("partitions_assigned", partitions=_names(partitions))

    def _report_assigned(self) -> None:
        self.health.assigned = len(self._owned)
        self.metrics.assigned_partitions.set(len(self._owned))

    # -- shutdown --------------------------------------------------------------------------------------
    def _shutdown(self, failure: str | None) -> int:
        """Finish the batches in hand, store their results, commit and leave, all within --shutdown-timeout-s."""
        self.health.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.log.info("shutdown_started", in_flight=self.tracker.pending_count(),
                      budget_s=self.settings.shutdown_timeout_s)
        failure = failure or self.guarantee.fatal
        if failure is None:
            try:
                while (self._scoring is not None or len(self._open)) and time.monotonic() < deadline:
                    self.health.beat()
                    self.guarantee.service(time.monotonic())
                    self._advance(time.monotonic(), stopping=True)
                    if self._scoring is not None:
                        wait_for([self._scoring[1]], timeout=max(0.0, min(0.05, deadline - time.monotonic())))
                self.guarantee.drain(deadline)
            except Exception as exc:  # noqa: BLE001 - still leave the group and exit non-zero
                failure = f"{type(exc).__name__}: {exc}"
                self.log.exception("drain_failed")
        failure = failure or self.guarantee.fatal
        unanswered = self.tracker.pending_count()
        self._inference.shutdown(wait=False, cancel_futures=True)
        self.models.close()
        if self.shadow is not None:
            self.shadow.close()
        for client in (self.consumer, self.guarantee.producer):
            try:
                if client is not None:
                    client.close(max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - leaving anyway; what is uncommitted is read again
                self.log.warning("close_failed", client=type(client).__name__, error=f"{type(exc).__name__}: {exc}")
        if failure:
            self.log.error("worker_failed", error=failure, unanswered=unanswered)
            return 1
        self.log.info("shutdown_complete", unanswered=unanswered)
        return 0


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
