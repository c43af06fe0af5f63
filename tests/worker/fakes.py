"""Test doubles shared by the worker's unit tests (logic only, no I/O)."""

from __future__ import annotations


class FakeFuture:
    """A send future resolved by the test (or at once by a fake sink); callbacks fire like kafka-python's,
    immediately when already resolved, else on ``resolve``."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.errbacks: list = []
        self.outcome: tuple[str, object] | None = None

    def add_callback(self, fn, *args):
        self.callbacks.append((fn, args))
        self._fire()
        return self

    def add_errback(self, fn, *args):
        self.errbacks.append((fn, args))
        self._fire()
        return self

    def resolve(self, error: BaseException | None = None) -> None:
        self.outcome = ("err", error) if error else ("ok", "metadata")
        self._fire()

    def _fire(self) -> None:
        if self.outcome is None:
            return
        kind, value = self.outcome
        for fn, args in self.callbacks if kind == "ok" else self.errbacks:
            fn(*args, value)
        self.callbacks, self.errbacks = [], []
