"""In-memory stand-ins for the Kafka clients and the engine: logic tests of the pipeline, no I/O.

The fakes follow kafka-python's contracts where the pipeline relies on them:
futures fire callbacks at once when already resolved, a transaction's records
and offsets become visible together on commit, and an abort discards both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka.errors import MessageSizeTooLargeError, ProducerFencedError
from kafka.structs import TopicPartition

from core.engine import InferenceEngine
from core.exceptions import InferenceError
from worker.pipeline.ports import InputRecord


class FakeFuture:
    def __init__(self) -> None:
        self._callbacks: list = []
        self._errbacks: list = []
        self.is_done = False
        self.exception: BaseException | None = None

    def add_callback(self, fn: Callable, *args: Any) -> FakeFuture:
        self._callbacks.append((fn, args))
        self._fire()
        return self

    def add_errback(self, fn: Callable, *args: Any) -> FakeFuture:
        self._errbacks.append((fn, args))
        self._fire()
        return self

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def resolve(self, error: BaseException | None = None) -> None:
        self.is_done, self.exception = True, error
        self._fire()

    def _fire(self) -> None:
        if not self.is_done:
            return
        if self.exception is None:
            for fn, args in self._callbacks:
                fn(*args, "metadata")
        else:
            for fn, args in self._errbacks:
                fn(*args, self.exception)
        self._callbacks, self._errbacks = [], []


@dataclass
class Written:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeBroker:
    """What readers see: committed output records per topic, and the group's committed offsets."""

    topics: dict[str, list[Written]] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def records(self, topic: str) -> list[Written]:
        with self.lock:
            return list(self.topics.get(topic, []))

    def append(self, written: list[Written]) -> None:
        with self.lock:
            for w in written:
                self.topics.setdefault(w.topic, []).append(w)


class FakeProducer:
    """Delivers at send time unless ``refuse(written)`` returns an error; transactional when asked to be."""

    def __init__(self, broker: FakeBroker, *, max_request_bytes: int = 10**9,
                 refuse: Callable[[Written], BaseException | None] = lambda w: None,
                 fail_commit: Callable[[], BaseException | None] = lambda: None):
        self.broker, self.max_request_bytes, self.refuse, self.fail_commit = broker, max_request_bytes, refuse, \
            fail_commit
        self._transaction: list[Written] | None = None
        self._offsets: dict[TopicPartition, int] = {}
        self.sends = 0
        self.closed = False

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> FakeFuture:
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > self.max_request_bytes:
            raise MessageSizeTooLargeError(f"{size} bytes is over max_request_size")
        self.sends += 1
        written, future = Written(topic, key, value, list(headers)), FakeFuture()
        error = self.refuse(written)
        if error is None:
            if self._transaction is not None:
                self._transaction.append(written)
            else:
                self.broker.append([written])
        future.resolve(error)
        return future

    def flush(self, timeout_s: float) -> None:
        pass

    def begin(self) -> None:
        self._transaction, self._offsets = [], {}

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float) -> None:
        self._offsets.update(offsets)

    def commit(self, timeout_s: float) -> None:
        error = self.fail_commit()
        if error is not None:
            raise error
        self.broker.append(self._transaction or [])
        with self.broker.lock:
            self.broker.committed.update(self._offsets)
        self._transaction = None

    def abort(self, timeout_s: float) -> None:
        self._transaction = None

    def fenced_by(self, exc: BaseException) -> BaseException | None:
        return exc if isinstance(exc, ProducerFencedError) else None

    def broken(self) -> BaseException | None:
        return None  # refusals that leave a real producer unusable are tested on Apache Kafka (test_acls.py)

    def close(self, timeout_s: float) -> None:
        self.closed = True


class FakeConsumer:
    """Serves fixed records per partition; the test can revoke partitions as a rebalance would.

    ``log_ends``: a partition's log end when its last record is not (a transactional topic ends with a
    commit marker). Like kafka-python, the position passes offsets that hold no record (markers) as soon as
    the records before them were handed out.
    """

    def __init__(self, broker: FakeBroker, records: list[InputRecord],
                 log_ends: dict[TopicPartition, int] | None = None):
        self.broker = broker
        self.records: dict[TopicPartition, list[InputRecord]] = {}
        for record in records:
            self.records.setdefault(record.tp, []).append(record)
        self.log_ends = {tp: rs[-1].offset + 1 for tp, rs in self.records.items()} | (log_ends or {})
        self.next_index = {tp: 0 for tp in self.records}
        self.owned: set[TopicPartition] = set()
        self.paused = False
        self.in_doubt = False  # as if no heartbeat had been answered for a session timeout
        self.hooks: Any = None
        self._rebalance: Callable[[], None] | None = lambda: self._assign(sorted(self.records))
        self.lock = threading.Lock()
        self.polls = 0

    def subscribe(self, hooks: Any) -> None:
        self.hooks = hooks

    def request_revoke(self, partitions: list[TopicPartition]) -> None:
        """The next poll revokes ``partitions`` (kafka-python runs rebalance callbacks inside poll)."""
        with self.lock:
            self._rebalance = lambda: self._revoke(partitions)

    def _assign(self, partitions: list[TopicPartition]) -> None:
        self.owned |= set(partitions)
        self.hooks.assigned(partitions)

    def _revoke(self, partitions: list[TopicPartition]) -> None:
        offsets = self.hooks.offsets_to_commit(partitions)
        rewind = self.hooks.resume_offsets(partitions)
        self.commit(offsets)
        self.hooks.release(partitions, lost=False, committed=offsets or None, error=None)
        self.owned -= set(partitions)
        for tp in partitions:  # the next owner starts from the commit
            self.next_index[tp] = self._index(tp, self.broker.committed.get(tp, rewind.get(tp, 0)))

    def _index(self, tp: TopicPartition, offset: int) -> int:
        return next((i for i, r in enumerate(self.records[tp]) if r.offset >= offset), len(self.records[tp]))

    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        self.polls += 1
        with self.lock:
            rebalance, self._rebalance = self._rebalance, None
        if rebalance is not None:
            rebalance()
        out: list[InputRecord] = []
        if not self.paused:
            for tp in sorted(self.owned):
                take = self.records[tp][self.next_index[tp]:self.next_index[tp] + max_records - len(out)]
                self.next_index[tp] += len(take)
                out.extend(take)
        if not out:
            time.sleep(min(timeout_ms, 5) / 1000)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with self.broker.lock:
            self.broker.committed.update(offsets)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def group_metadata(self) -> Any:
        return "group-metadata"

    def membership_in_doubt(self) -> bool:
        return self.in_doubt

    def refused(self) -> str | None:
        return None  # ACLs taken away while running are tested on Apache Kafka (test_acls.py)

    def positions(self) -> dict[TopicPartition, int]:
        """The next record's offset; past the last record, the log end (markers are skipped)."""
        return {tp: self.records[tp][i].offset if i < len(self.records[tp]) else self.log_ends[tp]
                for tp, i in self.next_index.items() if tp in self.owned}

    def lag(self) -> dict[TopicPartition, int]:
        return {tp: self.log_ends[tp] - self.broker.committed.get(tp, 0) for tp in self.owned}

    def close(self, timeout_s: float) -> None:
        if self.owned:
            self._revoke(sorted(self.owned))


@dataclass(frozen=True)
class FakeBundle:
    model_id: str = "fake@1"
    drift_reference: Any = None


class FakeEngine:
    """Two labels; a text containing ``boom`` makes ONNX Runtime fail on any batch that holds it."""

    labels = ("ham", "spam")
    BOOM = 666

    def __init__(self, before_predict: Callable[[], None] = lambda: None, model_id: str = "fake@1",
                 drift_reference: Any = None):
        self.before_predict = before_predict
        self.bundle = FakeBundle(model_id, drift_reference)
        self.calls = 0
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def token_ids(self, text: str) -> list[int]:
        return [self.BOOM if word == "boom" else 1 + len(word) for word in text.split()][:64]

    def predict_proba(self, id_lists: Any) -> np.ndarray:
        self.before_predict()
        self.calls += 1
        if any(self.BOOM in ids for ids in id_lists):
            raise InferenceError(f"inference failed on a batch of {len(id_lists)}")
        spam = np.array([min(0.99, 0.01 + 0.1 * (len(ids) % 10)) for ids in id_lists], dtype=np.float32)
        return np.stack([1 - spam, spam], axis=1)

    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1, explanations: Any = None) -> list:
        return InferenceEngine.to_predictions(self, probabilities, top_k, explanations)  # type: ignore[arg-type]


class RecordingLog:
    """Collects (level, event, fields) like a structlog logger would print them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **fields: self.events.append((level, event, fields))

    def named(self, event: str) -> list[dict]:
        return [fields for _, name, fields in self.events if name == event]
