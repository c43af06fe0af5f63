"""At least once: send asynchronously, commit offsets that every earlier result was acknowledged for.

All sends happen on the loop thread, in input order. The producer's callbacks
(on kafka-python's I/O thread) only queue the outcome; :meth:`AtLeastOnce.service`
handles it on the loop thread:

- acknowledged: the record is answered, and its offset can be committed once
  every earlier record of its partition is;
- *too large*: the record's message moves one rung down the ladder and is sent
  again (a label becomes an ``output_too_large`` dead letter), but only when the
  refusal is the record's own (:func:`~worker.pipeline.send_failures.own_refusal`):
  the producer refused it before queueing, or the broker refused it while nothing
  else was in flight. Otherwise (kafka-python fails the sends queued behind a
  refused batch, and every later one of a failed idempotent producer, with that
  same error) the message is held as a *suspect*: the producer is replaced, and
  held messages go out one at a time, each alone, until every suspect was sent
  alone: the ones that fit are labelled, the others move down;
- *fatal* (the producer is closed or fenced, or a bug): the worker stops, and a
  restart re-reads from the last commit;
- anything else (a missing topic, no ACL, a schema refusing records, a timeout):
  the message is *held*, and so is every later one, in input order per
  partition. The oldest held message is retried after the backoff; once the
  broker takes it, the held ones go out in order. Meanwhile no offset passes
  the held records, the loop pauses fetching and ``/readyz`` says why.
"""

from __future__ import annotations

import queue
import time
from collections import OrderedDict

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.exceptions import StartupError
from worker.pipeline.guarantee import OVERDUE_S, Guarantee
from worker.pipeline.messages import FIRST_DEAD_LETTER, Message, smaller
from worker.pipeline.send_failures import FailureKind, classify, own_refusal


class AtLeastOnce(Guarantee):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (message, error or None, wall-clock time of the ack), queued by the producer's I/O thread.
        self._outcomes: queue.SimpleQueue[tuple[Message, BaseException | None, float]] = queue.SimpleQueue()
        self._held: list[Message] = []  # waiting behind a failed send; per partition in offset order
        self._probe: Message | None = None  # the retried send whose outcome ends or extends the stall
        self._probe_alone = False  # nothing else was in flight when the probe went out
        self._suspects: set[int] = set()  # id() of held messages refused as too large among others
        self._unacknowledged: OrderedDict[int, tuple[str, float]] = OrderedDict()  # id(message) -> (topic, sent at)
        self._last_commit = 0.0

    def publish(self, messages: list[Message], now: float) -> None:
        for message in messages:
            if self._held or self.stall is not None or self._probe is not None:
                self._hold(message)
            else:
                self._send(message, now)

    def publish_shadow(self, messages: list[Message], now: float) -> None:
        if self.stall is not None or self._held:  # the primary's outputs come first; the shadow's are optional
            self.metrics.shadow_labels_dropped.inc(len(messages))
            return
        for message in messages:
            self._send(message, now)

    def service(self, now: float) -> None:
        self._take_outcomes(now)
        if self._probe is not None:
            return
        if self.stall is not None:
            if self.retry_due(now) and self._producer_usable(self.stall.topic, now):
                probe = self._pop_live()
                if probe is None:  # everything held belonged to revoked partitions
                    self.recovered(now, held=0)
                else:
                    self.metrics.send_retries.labels(probe.topic).inc()
                    self._send_probe(probe, now)
            return
        if self._isolating():
            # Alone means alone on this producer: wait for what is in flight, and replace a failed producer.
            if not self._unacknowledged and self._producer_usable(self._held[0].topic, now):
                probe = self._pop_live()
                if probe is not None:
                    self._send_probe(probe, now)
            return
        while self._held:
            message = self._pop_live()
            if message is not None:
                self._send(message, now)

    def _send_probe(self, message: Message, now: float) -> None:
        self._probe, self._probe_alone = message, not self._unacknowledged
        self._send(message, now)

    def _isolating(self) -> bool:
        """True while a held message was refused as too large among others and not yet sent alone."""
        self._suspects &= {id(message) for message in self._held}
        return bool(self._suspects)

    def _producer_usable(self, topic: str, now: float) -> bool:
        """Replace a producer that a refusal left unusable, before the retry; False if no new one started yet."""
        broken = self.producer.broken()
        if broken is None:
            return True
        try:
            replacement = self.new_producer()
        except (KafkaError, StartupError) as exc:  # the broker is still away: try again after the backoff
            self.schedule_retry(topic, exc, now)
            return False
        self.discard_producer(broken)
        self.producer = replacement
        return True

    def problem(self) -> str | None:
        stalled = super().problem()
        if stalled is not None or not self._unacknowledged:
            return stalled
        topic, sent_at = next(iter(self._unacknowledged.values()))
        waited = time.monotonic() - sent_at
        if waited < OVERDUE_S:
            return None
        return (f"no acknowledgement from the broker for {waited:.0f} s (sends to {topic!r} wait): check that the "
                "brokers are reachable; the producer keeps retrying")

    def maybe_commit(self, now: float) -> None:
        if now - self._last_commit >= self.settings.commit_interval_ms / 1000:
            self._last_commit = now
            self.commit_offsets(self.tracker.committable(positions=self.consumer.positions()))

    def offsets_to_commit(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        # On the consumer's I/O thread, inside poll: no position read here; the next owner commits past markers.
        return self.tracker.committable(partitions)

    def drain(self, deadline: float) -> None:
        """Flush, handle the outcomes (a too-large message is sent again smaller), commit. Held sends stay held."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.producer.flush(max(0.1, remaining))
            except KafkaError as exc:  # KafkaTimeoutError and the like: commit what is answered
                self.log.warning("flush_failed", error=f"{type(exc).__name__}: {exc}")
            if not self._take_outcomes(time.monotonic()) or time.monotonic() >= deadline:
                break
        self.commit_offsets(self.tracker.committable(positions=self.consumer.positions()))

    # -- sending ---------------------------------------------------------------------------------------
    def _send(self, message: Message, now: float) -> None:
        while True:
            try:
                future = self.producer.send(message.topic, message.key, message.value, message.headers)
            except Exception as exc:  # noqa: BLE001 - classified below: too large, retried, or fatal
                if classify(exc) is FailureKind.TOO_LARGE and not message.smallest:
                    self._log_too_large(message, exc)
                    reduced = smaller(message, self.settings)
                    if message is self._probe:
                        self._probe = reduced
                    message = reduced
                    continue
                self._failed(message, exc, now)
                return
            self._unacknowledged[id(message)] = (message.topic, time.monotonic())
            future.add_callback(self._on_ack, message)
            future.add_errback(self._on_error, message)
            return

    def _on_ack(self, message: Message, _metadata: object) -> None:  # producer I/O thread: only queue it
        self._outcomes.put((message, None, time.time()))

    def _on_error(self, message: Message, exc: BaseException) -> None:  # producer I/O thread: only queue it
        self._outcomes.put((message, exc, 0.0))

    def _take_outcomes(self, now: float) -> int:
        handled = 0
        while True:
            try:
                message, error, acked_at = self._outcomes.get_nowait()
            except queue.Empty:
                return handled
            handled += 1
            self._unacknowledged.pop(id(message), None)
            if error is None:
                if message is self._probe:
                    self._probe = None
                    self.recovered(now, held=len(self._held))
                self.answered(message, acked_at)
            else:
                self._failed(message, error, now)

    def _failed(self, message: Message, exc: BaseException, now: float) -> None:
        self.metrics.send_errors.inc()
        was_probe = message is self._probe
        if was_probe:
            self._probe = None
        if message.shadow or not self.tracker.is_current(message.entry.ticket):
            return  # a shadow label is not retried; a gone partition's record is answered by its next owner
        kind = classify(exc)
        if kind is FailureKind.FATAL:
            self.fatal = self.fatal or f"send to {message.topic!r} failed: {type(exc).__name__}: {exc}"
            return
        if kind is FailureKind.TOO_LARGE:
            if was_probe:  # the destination answered: it works, only some message does not fit
                self.recovered(now, held=len(self._held))
            if not own_refusal(exc, alone=was_probe and self._probe_alone):
                self._suspects.add(id(message))  # sent again alone before anything is concluded
                self._hold(message)
                return
            if not message.smallest:
                self._log_too_large(message, exc)
                self.publish([smaller(message, self.settings)], now)
                return
        self._hold(message)
        if self.stall is not None and not was_probe:
            return  # one more send that was already in flight; the probe decides when to try again
        ticket = message.entry.ticket
        self.schedule_retry(message.topic, exc, now, partition=ticket.partition.partition, offset=ticket.offset,
                            held=len(self._held))

    def _log_too_large(self, message: Message, exc: BaseException) -> None:
        event = "output_too_large" if message.rung < FIRST_DEAD_LETTER else "dead_letter_too_large"
        self.log.warning(event, source=message.entry.source.as_id(), rung=message.rung, error=str(exc))

    def _hold(self, message: Message) -> None:
        """Insert before the first held message of the same partition with a higher offset (keeps input order)."""
        ticket = message.entry.ticket
        index = next((i for i, held in enumerate(self._held)
                      if held.entry.ticket.partition == ticket.partition and held.entry.ticket.offset > ticket.offset),
                     len(self._held))
        self._held.insert(index, message)

    def _pop_live(self) -> Message | None:
        """The oldest held message whose partition is still ours; others are dropped (the next owner re-reads)."""
        while self._held:
            message = self._held.pop(0)
            if self.tracker.is_current(message.entry.ticket):
                return message
        return None
