"""The exactly-once loop's bookkeeping and control flow, with in-memory clients (the broker side is in
tests/integration/test_exactly_once.py): batch closing and offsets, abort and rewind, fencing, revocation."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
from kafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFencedError
from kafka.structs import TopicPartition

from worker import codec
from worker.engine import Prediction
from worker.exceptions import InferenceError
from worker.kafka_io import InputRecord
from worker.pipeline.open_batch import Entry, OpenBatch
from worker.pipeline.transactional import TransactionalLoop
from worker.settings import build_settings, default_transactional_id

TOPIC = "in"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def record(partition: int, offset: int, value: bytes | None = b"some words here") -> InputRecord:
    return InputRecord(TOPIC, partition, offset, f"k{partition}-{offset}".encode(), value, [], 1)


def entry(partition: int, offset: int, tokens: int = 3) -> Entry:
    rec = record(partition, offset)
    return Entry(rec, codec.SourceRef(TOPIC, partition, offset), codec.Decoded("x", None), [1] * tokens)


# -- OpenBatch ----------------------------------------------------------------------------------------------
def test_batch_closes_on_size_tokens_or_time() -> None:
    batch = OpenBatch()
    assert batch.closed_by(0.0, max_size=3, max_wait_s=1.0, max_tokens=100) is None
    batch.add(entry(0, 0), now=10.0)
    batch.add(entry(0, 1), now=10.5)
    assert batch.closed_by(10.9, 3, 1.0, 100) is None
    assert batch.closed_by(11.0, 3, 1.0, 100) == "time"  # measured from the first record
    batch.add(entry(1, 7), now=10.6)
    assert batch.closed_by(10.6, 3, 1.0, 100) == "size"
    heavy = OpenBatch()
    heavy.add(entry(0, 0, tokens=60), 0.0)
    heavy.add(entry(0, 1, tokens=60), 0.0)  # crosses the budget and stays: offsets stay contiguous
    assert heavy.closed_by(0.0, 10, 1.0, 100) == "tokens" and len(heavy) == 2


def test_batch_offsets_rewind_to_first_and_commit_past_last() -> None:
    batch = OpenBatch()
    for partition, offset in [(0, 5), (1, 2), (0, 6), (1, 3), (0, 7)]:
        batch.add(entry(partition, offset), 0.0)
    assert batch.first_offsets() == {P0: 5, P1: 2}
    assert batch.first_offsets({P1}) == {P1: 2}
    assert batch.next_offsets() == {P0: 8, P1: 4}
    assert batch.drop({P0}) == 3
    assert batch.next_offsets() == {P1: 4} and batch.tokens == 6


# -- settings -----------------------------------------------------------------------------------------------
def test_exactly_once_settings() -> None:
    assert build_settings(topic="t", model=Path("b")).exactly_once is False
    derived = build_settings(topic="t", model=Path("b"), group_id="g", exactly_once=True)
    assert derived.transactional_id.startswith("g-") and derived.transactional_id != "g-"
    assert default_transactional_id("g", "worker-3") == "g-worker-3"
    given = build_settings(topic="t", model=Path("b"), exactly_once=True, transactional_id="replica-0")
    assert given.transactional_id == "replica-0"
    with pytest.raises(click.BadParameter, match="only used with --exactly-once"):
        build_settings(topic="t", model=Path("b"), transactional_id="replica-0")
    with pytest.raises(click.BadParameter, match="blank"):
        build_settings(topic="t", model=Path("b"), exactly_once=True, transactional_id="  ")


# -- the loop with in-memory clients ------------------------------------------------------------------------
class FakeEngine:
    def token_ids(self, text: str) -> list[int]:
        return [999 if word == "poison" else len(word) for word in text.split()]

    def predict_proba(self, id_lists):
        if any(999 in ids for ids in id_lists):
            raise InferenceError(f"inference failed on a batch of {len(id_lists)}")
        return np.tile(np.array([0.7, 0.2, 0.1], dtype=np.float32), (len(id_lists), 1))

    def to_predictions(self, probabilities, top_k=1):
        return [Prediction("alpha", 0.7, (("alpha", 0.7),)) for _ in probabilities]


class FakeSource:
    """Per-partition logs with a read position; poll() stops the loop once everything was read."""

    def __init__(self, records: list[InputRecord]):
        self.records = records
        self.position = {P0: 0, P1: 0}
        self.loop: TransactionalLoop | None = None
        self.seeks: list[dict] = []
        self.closed = False

    def subscribe(self, hooks) -> None:
        hooks.assigned([P0, P1])

    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        out = [r for r in self.records if r.offset >= self.position[r.tp]][:max_records]
        for r in out:
            self.position[r.tp] = r.offset + 1
        if not out and self.loop is not None:
            self.loop.request_stop()
        return out

    def seek(self, offsets: dict) -> None:
        self.seeks.append(dict(offsets))
        self.position.update(offsets)

    def group_metadata(self) -> str:
        return "group-metadata"

    def lag(self) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True


class FakeFuture:
    def __init__(self, exception: Exception | None = None) -> None:
        self.is_done, self.exception = True, exception

    def failed(self) -> bool:
        return self.exception is not None


class FakeSink:
    def __init__(self, fail_commits: int = 0, fenced: bool = False, max_bytes: int | None = None,
                 broker_max_bytes: int | None = None):
        self.fail_commits, self.fenced = fail_commits, fenced
        self.max_bytes, self.broker_max_bytes = max_bytes, broker_max_bytes  # producer's and broker's limits
        self.open: list[tuple] = []
        self.committed: list[tuple] = []
        self.offsets: dict = {}
        self.pending_offsets: dict = {}
        self.aborts = 0
        self.failed_sends = 0
        self.closed = False

    def begin(self) -> None:
        self.open, self.pending_offsets = [], {}

    def send(self, topic, key, value, headers):
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if self.max_bytes is not None and size > self.max_bytes:
            raise MessageSizeTooLargeError(f"{size} bytes")
        if self.broker_max_bytes is not None and size > self.broker_max_bytes:
            self.failed_sends += 1
            return FakeFuture(MessageSizeTooLargeError(f"broker: {size} bytes"))
        self.open.append((topic, key, dict(headers)))
        return FakeFuture()

    def flush(self, timeout_s) -> None:
        pass

    def send_offsets(self, offsets, group_metadata) -> None:
        assert group_metadata == "group-metadata"
        self.pending_offsets = dict(offsets)

    def commit(self) -> None:
        if self.fenced:
            raise KafkaError("Cannot execute transactional method because we are in an error state")
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaError("coordinator unavailable")
        self.committed += self.open
        self.offsets.update(self.pending_offsets)

    def abort(self) -> None:
        self.aborts += 1
        self.open, self.pending_offsets = [], {}

    def fencing_error(self, exc):
        return ProducerFencedError() if self.fenced else None

    def close(self, timeout_s) -> None:
        self.closed = True


def run_loop(records: list[InputRecord], sink: FakeSink, batch_size: int = 4):
    settings = build_settings(topic=TOPIC, model=Path("b"), batch_size=batch_size, max_wait_ms=0,
                              exactly_once=True, transactional_id="t")
    source = FakeSource(records)
    loop = TransactionalLoop(settings, FakeEngine(), source, sink, model_id="m@1")
    loop.backoff_base_s = 0.0
    source.loop = loop
    return loop.run(), source


def test_every_record_is_committed_once_with_its_offsets() -> None:
    records = [record(p, o) for o in range(5) for p in (0, 1)] + [record(0, 5, b"[1]"), record(1, 5, b"poison x")]
    sink = FakeSink()
    code, source = run_loop(records, sink)
    assert code == 0 and source.closed and sink.closed
    assert sorted(key for _, key, _ in sink.committed) == sorted(r.key for r in records)
    assert sink.offsets == {P0: 6, P1: 6}
    assert sorted(key for topic, key, _ in sink.committed if topic == "in.dlq") == [b"k0-5", b"k1-5"]


def test_a_failed_commit_aborts_rewinds_and_retries() -> None:
    records = [record(0, o) for o in range(6)]
    sink = FakeSink(fail_commits=2)
    code, source = run_loop(records, sink)
    assert code == 0 and sink.aborts == 2
    assert source.seeks == [{P0: 0}, {P0: 0}]  # back to the last committed position, twice
    assert [key for _, key, _ in sink.committed] == [r.key for r in records]  # no duplicates, nothing skipped
    assert sink.offsets == {P0: 6}


def test_repeated_failures_give_up_with_exit_1_and_nothing_committed() -> None:
    sink = FakeSink(fail_commits=100)
    code, _ = run_loop([record(0, o) for o in range(3)], sink)
    assert code == 1 and sink.aborts == 5 and sink.committed == [] and sink.offsets == {}


def test_a_fenced_producer_exits_1_without_aborting() -> None:
    sink = FakeSink(fenced=True)
    code, source = run_loop([record(0, o) for o in range(3)], sink)
    assert code == 1 and sink.aborts == 0 and sink.committed == [] and source.closed


def test_revocation_drops_the_open_batch_and_refuses_late_records() -> None:
    settings = build_settings(topic=TOPIC, model=Path("b"), exactly_once=True, transactional_id="t")
    loop = TransactionalLoop(settings, FakeEngine(), FakeSource([]), FakeSink(), model_id="m@1")
    loop.assigned([P0, P1])
    for rec in (record(0, 3), record(1, 8), record(0, 4)):
        loop.batch.add(loop._decode(rec), 0.0)
    assert loop.prepare_revoke([P0]) == {}  # nothing is ever committed outside a transaction
    assert loop.resume_offsets([P0]) == {P0: 3}
    loop.finish_revoke([P0], None, None)
    assert [e.record.tp for e in loop.batch.entries] == [P1]
    loop.source = FakeSource([record(0, 5), record(1, 9)])
    loop._poll_once()
    assert [(e.record.partition, e.record.offset) for e in loop.batch.entries] == [(1, 8), (1, 9)]


@pytest.mark.parametrize("where", ["producer", "broker"])
def test_a_label_too_large_becomes_a_small_dead_letter_in_the_same_commit(where: str) -> None:
    big = InputRecord(TOPIC, 0, 1, b"k" * 5000, b"fine text", [("trace", b"t" * 3000)], 1)
    records = [record(0, 0), big, record(0, 2)]
    limits = {"max_bytes": 2000} if where == "producer" else {"broker_max_bytes": 2000}
    sink = FakeSink(**limits)
    code, _ = run_loop(records, sink)
    assert code == 0 and sink.offsets == {P0: 3}
    assert [(topic, key) for topic, key, _ in sink.committed] == [
        ("in.labels", b"k0-0"), ("in.dlq", None), ("in.labels", b"k0-2")]
    headers = sink.committed[1][2]
    assert headers["error.type"] == codec.OUTPUT_TOO_LARGE.encode()
    assert headers["error.key_dropped"] == b"5000" and headers["error.headers_dropped"] == b"1"
    # The producer refuses before queueing (same transaction); the broker's refusals abort twice
    # (label, then the full dead letter) before the minimal dead letter commits.
    assert sink.aborts == (0 if where == "producer" else 2)
