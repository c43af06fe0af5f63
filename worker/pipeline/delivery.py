"""Getting every output to the broker: a failed send is retried or replaced, never dropped.

kafka-python retries transient errors inside the producer (until its delivery
timeout); what reaches us failed for good as far as the producer is concerned:

- *too large* (the producer's ``max_request_size`` or the topic's
  ``max.message.bytes``): the same bytes can never succeed, so the message's
  ``on_too_large`` fallback runs (see :mod:`worker.pipeline.publish`);
- *fatal*: the producer itself is unusable (closed, fenced); only a new
  process helps, so the worker stops and a restart re-reads;
- *retry*, everything else: missing topic, no Write ACL, a schema or policy
  refusing the records, timeouts. Neither the worker nor a crash loop can fix
  these, so the send is retried with capped exponential backoff until an
  operator does. ACLs too are fixed at run time: authorization is retried.

While a send is stuck (*stalled*), every later send is held back in order
behind it and its ticket stays pending (no commit passes it); the loop pauses
fetching and reports not-ready. One *probe*, the oldest held send, is retried
per backoff step; once it is acknowledged the held sends go out in order. Only
sends already in the producer at the first failure can land before the retry.

Producer callbacks run on kafka-python's I/O thread, where ``send`` must not be
called (it can block on metadata): they only record outcomes, and a
``send-retry`` thread does every resend.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.kafka_io import Headers, InputRecord
from worker.offsets import Ticket
from worker.pipeline.ports import Sink
from worker.pipeline.send_failures import FailureKind, advice, backoff_s, classify


@dataclass(eq=False)
class Outgoing:
    """One message on its way to the broker; identity matters, several may look alike."""

    topic: str
    record: InputRecord
    ticket: Ticket
    value: bytes | None
    headers: Headers
    reason: str | None  # the dead-letter reason, None for a label
    key: bytes | None = None
    # Called (never on the producer's I/O thread) when the message is too large; None: nothing smaller exists.
    on_too_large: Callable[[BaseException], None] | None = field(default=None, repr=False)

    @property
    def order(self) -> tuple[str, int, int]:
        return self.ticket.partition.topic, self.ticket.partition.partition, self.ticket.offset


@dataclass
class _Stall:
    topic: str
    error: str
    fix: str
    attempt: int
    retry_at: float
    since: float


class Delivery:
    """Sends messages through ``sink``, holding and retrying them while sends fail (see module docstring)."""

    def __init__(self, sink: Sink, *, on_acked: Callable[[Outgoing, Any], None], is_current: Callable[[Ticket], bool],
                 metrics: Any, log: Any, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.sink, self.on_acked, self.is_current = sink, on_acked, is_current
        self.metrics, self.log, self.clock = metrics, log, clock
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.fatal: str | None = None
        self._cond = threading.Condition()
        self._held: list[Outgoing] = []  # in send order, each partition's messages in offset order
        self._too_large: list[tuple[Outgoing, BaseException]] = []  # reported on the I/O thread, handled by pump()
        self._stall: _Stall | None = None
        self._probe: Outgoing | None = None  # the retried send whose outcome decides the stall
        self._in_hand = False  # pump() is handing a held message to the sink: nothing may overtake it
        self._wake = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- public ----------------------------------------------------------------------------------------
    def send(self, message: Outgoing) -> None:
        """Send now, or queue behind earlier messages that are held; callable from any thread but the I/O one."""
        with self._cond:
            if self._held or self._stall is not None or self._in_hand or self._probe is not None:
                self._hold(message)
                self._notify()
                return
        self._dispatch(message)

    def problem(self) -> str | None:
        """Why sends are stuck, for /readyz and the pause decision; None while they flow."""
        stall = self._stall
        if stall is None:
            return None
        return f"sends to {stall.topic!r} fail ({stall.error}), retry {stall.attempt} in progress: {stall.fix}"

    def held_count(self) -> int:
        with self._cond:
            return len(self._held) + (1 if self._probe is not None else 0)

    def start(self) -> Delivery:
        self._thread = threading.Thread(target=self._run, name="send-retry", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop retrying; held messages stay unacknowledged, so their offsets are not committed."""
        with self._cond:
            self._closed = True
            self._notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def pump(self) -> float | None:
        """Do what is due now: too-large fallbacks, the next probe, draining. Returns seconds until more is due."""
        while True:
            with self._cond:
                if self._closed:
                    return None
                if self._too_large:
                    message, exc = self._too_large.pop(0)
                    action: tuple[str, Any] = ("too_large", (message, exc))
                elif self._probe is not None:
                    return None  # its outcome arrives through a callback
                elif self._stall is not None:
                    wait = self._stall.retry_at - self.clock()
                    if wait > 0:
                        return wait
                    message = self._pop_live()
                    if message is None:  # everything held belonged to revoked partitions
                        self._recovered()
                        continue
                    self._probe = message
                    self.metrics.send_retries.labels(message.topic).inc()
                    action = ("send", message)
                elif self._held:
                    message = self._pop_live()
                    if message is None:
                        continue
                    self._in_hand = True
                    action = ("send", message)
                else:
                    return None
            kind, payload = action
            try:
                if kind == "too_large":
                    self._fall_back(*payload)
                else:
                    self._dispatch(payload)
            finally:
                with self._cond:
                    self._in_hand = False

    # -- internals -------------------------------------------------------------------------------------
    def _dispatch(self, message: Outgoing) -> None:
        try:
            future = self.sink.send(message.topic, message.key, message.value, message.headers)
        except Exception as exc:  # noqa: BLE001 - classified: too large, retried, or fatal
            self._failed(message, exc, on_io_thread=False)
            return
        future.add_callback(self._acked, message)
        future.add_errback(self._errback, message)

    def _errback(self, message: Outgoing, exc: BaseException) -> None:
        self._failed(message, exc, on_io_thread=True)

    def _acked(self, message: Outgoing, metadata: Any) -> None:
        with self._cond:
            if message is self._probe:
                self._probe = None
                self._recovered()
        self.on_acked(message, metadata)

    def _failed(self, message: Outgoing, exc: BaseException, *, on_io_thread: bool) -> None:
        self.metrics.send_errors.inc()
        kind = classify(exc)
        if kind is FailureKind.FATAL:
            self.fatal = self.fatal or f"send to {message.topic!r} failed: {type(exc).__name__}: {exc}"
            self.log.error("send_failed", topic=message.topic, partition=message.ticket.partition.partition,
                           offset=message.ticket.offset, error=f"{type(exc).__name__}: {exc}")
            return
        if kind is FailureKind.TOO_LARGE and message.on_too_large is not None:
            with self._cond:
                if message is self._probe:  # the destination answered: it works, only this message does not fit
                    self._probe = None
                    self._recovered()
                if on_io_thread:
                    self._too_large.append((message, exc))
                    self._notify()
                    return
            self._fall_back(message, exc)
            return
        self._schedule_retry(message, exc)

    def _fall_back(self, message: Outgoing, exc: BaseException) -> None:
        if self.is_current(message.ticket):
            message.on_too_large(exc)

    def _schedule_retry(self, message: Outgoing, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._hold(message)
            now = self.clock()
            was_probe = message is self._probe
            if was_probe:
                self._probe = None
            if self._stall is not None and not was_probe:
                return  # one more send that was in flight; the probe decides when to try again
            attempt = self._stall.attempt + 1 if self._stall is not None else 1
            delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
            since = self._stall.since if self._stall is not None else now
            self._stall = _Stall(message.topic, error, advice(message.topic, exc), attempt, now + delay, since)
            self.metrics.send_stalled.set(1)
            self._notify()
        self.log.error("send_retry", topic=message.topic, partition=message.ticket.partition.partition,
                       offset=message.ticket.offset, attempt=attempt, retry_in_s=round(delay, 3), error=error,
                       fix=advice(message.topic, exc), held=self.held_count())

    def _recovered(self) -> None:
        """Called with the lock held: the probe got through, release the held messages in order."""
        stall, self._stall = self._stall, None
        self.metrics.send_stalled.set(0)
        self._notify()
        if stall is not None:
            self.log.info("send_recovered", topic=stall.topic, attempts=stall.attempt,
                          stalled_s=round(self.clock() - stall.since, 3), held=len(self._held))

    def _hold(self, message: Outgoing) -> None:
        """Insert before the first held message of the same partition with a higher offset (keeps input order)."""
        orders = [m.order for m in self._held]
        same_partition_later = [i for i, order in enumerate(orders)
                                if order[:2] == message.order[:2] and order[2] > message.order[2]]
        index = same_partition_later[0] if same_partition_later else len(self._held)
        self._held.insert(index, message)

    def _pop_live(self) -> Outgoing | None:
        """The oldest held message whose partition is still ours; others are dropped (the next owner re-reads)."""
        while self._held:
            message = self._held.pop(0)
            if self.is_current(message.ticket):
                return message
        return None

    def _notify(self) -> None:
        self._wake = True
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            try:
                delay = self.pump()
            except Exception as exc:  # noqa: BLE001 - a bug here must stop the worker, not silently stall it
                self.fatal = self.fatal or f"send-retry thread failed: {type(exc).__name__}: {exc}"
                self.log.exception("send_retry_thread_failed")
                return
            with self._cond:
                if self._closed:
                    return
                if not self._wake:
                    self._cond.wait(timeout=min(delay, 1.0) if delay is not None else 1.0)
                self._wake = False

