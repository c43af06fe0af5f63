"""The batcher closes a batch on count, on time since its first item, or on a token budget."""

from __future__ import annotations

import queue

from worker.batcher import Batcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TimedQueue:
    """A queue whose items arrive at given fake times; waiting advances the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock, arrivals: list[tuple[float, object]]):
        self.clock = clock
        self.arrivals = sorted(arrivals, key=lambda a: a[0])

    def get(self, timeout: float | None = None) -> object:
        if self.arrivals and self.arrivals[0][0] <= self.clock.now + (timeout or 0):
            at, item = self.arrivals.pop(0)
            self.clock.now = max(self.clock.now, at)
            return item
        self.clock.now += timeout or 0
        raise queue.Empty

    def get_nowait(self) -> object:
        return self.get(0)


def make(arrivals, clock, **kwargs):
    options = {"max_size": 4, "max_wait_s": 0.05, "max_tokens": 1000, **kwargs}
    return Batcher(TimedQueue(clock, arrivals), tokens_of=len, clock=clock, **options)


def test_closes_on_count_before_the_deadline():
    clock = FakeClock()
    batcher = make([(100.0 + i * 0.001, "x" * 3) for i in range(10)], clock)
    batch = batcher.next_batch()
    assert len(batch.items) == 4 and batch.closed_by == "size"
    assert clock.now < 100.05


def test_closes_on_deadline_counted_from_the_first_item():
    clock = FakeClock()
    # First item at t=100, then one at +30 ms, one at +60 ms (after the 50 ms deadline).
    batcher = make([(100.0, "a"), (100.03, "b"), (100.06, "c")], clock)
    first = batcher.next_batch()
    assert first.items == ["a", "b"] and first.closed_by == "time"
    assert abs(clock.now - 100.05) < 1e-9
    second = batcher.next_batch()
    assert second.items == ["c"]


def test_token_budget_closes_and_carries_the_item_that_does_not_fit():
    clock = FakeClock()
    batcher = make([(100.0, "x" * 400), (100.0, "y" * 400), (100.0, "z" * 400), (100.0, "w" * 10)],
                   clock, max_tokens=1000)
    first = batcher.next_batch()
    assert [len(i) for i in first.items] == [400, 400] and first.closed_by == "tokens"
    assert first.tokens == 800
    second = batcher.next_batch()
    assert second.items[0] == "z" * 400 and second.items[1] == "w" * 10


def test_single_item_over_the_budget_is_a_batch_of_its_own():
    clock = FakeClock()
    batcher = make([(100.0, "x" * 5000), (100.0, "y")], clock, max_tokens=1000)
    first = batcher.next_batch()
    assert first.items == ["x" * 5000] and first.closed_by == "tokens"
    assert batcher.next_batch().items == ["y"]


def test_idle_queue_returns_none_after_the_idle_timeout():
    clock = FakeClock()
    batcher = make([], clock)
    assert batcher.next_batch(idle_timeout_s=0.2) is None
    assert abs(clock.now - 100.2) < 1e-9


def test_drain_pending_returns_carry_and_queued_items():
    clock = FakeClock()
    batcher = make([(100.0, "x" * 900), (100.0, "y" * 900), (100.0, "z")], clock, max_tokens=1000)
    assert batcher.next_batch().items == ["x" * 900]
    assert batcher.drain_pending() == ["y" * 900, "z"]


def make_stamped(arrivals, clock, **kwargs):
    """Items carry the time they were queued, as the worker's work items do."""
    options = {"max_size": 8, "max_wait_s": 0.05, "max_tokens": 1000, **kwargs}
    stamped = [(at, (name, at)) for at, name in arrivals]
    return Batcher(TimedQueue(clock, stamped), tokens_of=lambda item: 1, clock=clock,
                   arrived_at=lambda item: item[1], **options)


def test_items_that_already_waited_out_the_deadline_close_the_batch_at_once():
    clock = FakeClock()
    # Three items queued while the previous batch ran (the clock is already 80 ms past the first).
    batcher = make_stamped([(99.92, "a"), (99.95, "b"), (99.99, "c"), (100.01, "d")], clock)
    batch = batcher.next_batch()
    assert [name for name, _ in batch.items] == ["a", "b", "c"] and batch.closed_by == "time"
    assert clock.now == 100.0  # no further wait: "d" arrives later and opens the next batch
    assert [name for name, _ in batcher.next_batch().items] == ["d"]


def test_deadline_counts_from_when_the_first_item_was_queued():
    clock = FakeClock()
    # The first item has waited 30 ms; with a 50 ms window, only 20 ms are left to wait.
    batcher = make_stamped([(99.97, "a"), (100.015, "b"), (100.025, "c")], clock)
    batch = batcher.next_batch()
    assert [name for name, _ in batch.items] == ["a", "b"]
    assert abs(clock.now - 100.02) < 1e-9
