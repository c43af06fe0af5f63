"""Micro-batching: a batch closes on count, on time since its first item, or on a token budget.

The same idea as MLServer's adaptive batcher: never wait longer than
``max_wait_s`` after the first item arrived, never exceed ``max_size`` items,
and never exceed ``max_tokens`` tokens so one batch of long documents cannot
blow up memory or latency. The clock is injectable so tests drive time.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batch(Generic[T]):
    items: list[T] = field(default_factory=list)
    tokens: int = 0
    opened_at: float = 0.0
    closed_by: str = ""


class Batcher(Generic[T]):
    """Pulls items from a queue into batches; ``tokens_of`` says how many tokens an item costs."""

    def __init__(
        self,
        source: queue.Queue,
        tokens_of: Callable[[T], int],
        max_size: int,
        max_wait_s: float,
        max_tokens: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source = source
        self.tokens_of = tokens_of
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_tokens = max(1, max_tokens)
        self.clock = clock
        self._carry: T | None = None  # an item that did not fit the previous batch's token budget

    def next_batch(self, idle_timeout_s: float = 0.1) -> Batch[T] | None:
        """The next batch, or ``None`` if nothing arrived within ``idle_timeout_s``."""
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            try:
                first = self.source.get(timeout=idle_timeout_s)
            except queue.Empty:
                return None
        batch: Batch[T] = Batch([first], self.tokens_of(first), self.clock())
        deadline = batch.opened_at + self.max_wait_s
        while True:
            if len(batch.items) >= self.max_size:
                batch.closed_by = "size"
                return batch
            if batch.tokens >= self.max_tokens:
                batch.closed_by = "tokens"
                return batch
            remaining = deadline - self.clock()
            if remaining <= 0:
                batch.closed_by = "time"
                return batch
            try:
                item = self.source.get(timeout=remaining)
            except queue.Empty:
                batch.closed_by = "time"
                return batch
            cost = self.tokens_of(item)
            if batch.tokens + cost > self.max_tokens:
                # The batch is full by tokens; the item opens the next batch instead.
                self._carry = item
                batch.closed_by = "tokens"
                return batch
            batch.items.append(item)
            batch.tokens += cost

    def drain_pending(self) -> list[T]:
        """Whatever is queued right now (used at shutdown)."""
        items = [self._carry] if self._carry is not None else []
        self._carry = None
        while True:
            try:
                items.append(self.source.get_nowait())
            except queue.Empty:
                return items
