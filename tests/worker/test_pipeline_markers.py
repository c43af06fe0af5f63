"""Transaction markers in the input: a drained partition is committed at its log end, never past a record in flight.

An input topic written by a transactional producer holds a commit marker after each transaction: an offset
no consumer ever receives. The in-memory consumer skips them as kafka-python does (its position passes a
marker once the records before it are handed out). Both delivery guarantees, with the same outcome.
Real-broker versions: tests/integration/test_transaction_markers.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka.structs import TopicPartition

from tests.worker.fakes import FakeConsumer, FakeEngine
from tests.worker.test_pipeline import MODES, TOPIC, Run, doc, run_pipeline

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def transactional(partition: int, transactions: int, size: int) -> tuple[list, int]:
    """``transactions`` of ``size`` records on ``partition``, each followed by its marker; (records, log end)."""
    records, offset = [], 0
    for _ in range(transactions):
        records += [doc(partition, offset + i, "word " * (1 + i % 5)) for i in range(size)]
        offset += size + 1  # the marker takes the next offset
    return records, offset


@pytest.mark.parametrize("mode", MODES)
def test_a_drained_transactional_partition_is_committed_at_its_log_end(mode: str) -> None:
    first, end0 = transactional(0, 5, 7)
    second, end1 = transactional(1, 1, 4)
    run = run_pipeline(mode, first + second, log_ends={P0: end0, P1: end1},
                       until=lambda r: r.broker.committed.get(P0) == end0 and r.broker.committed.get(P1) == end1)
    assert run.code == 0
    assert run.answered() == {(r.partition, r.offset): "label" for r in first + second}
    assert run.broker.committed == {P0: end0, P1: end1}  # 40 and 5: not 39 and 4 ("last record + 1")


@pytest.mark.parametrize("mode", MODES)
def test_a_marker_read_after_its_records_were_committed_is_committed_too(mode: str) -> None:
    """The marker reaches the consumer after the batch committed: the idle partition's commit moves past it."""
    records, end = transactional(0, 1, 6)
    appended: list[int] = []

    def during(run: Run, consumer: FakeConsumer) -> None:
        if not appended and run.broker.committed.get(P0) == end:
            consumer.log_ends[P0] = end + 1  # an upstream transaction aborted with no record: one more marker
            appended.append(end + 1)

    run = run_pipeline(mode, records, log_ends={P0: end}, during=during,
                       until=lambda r: r.broker.committed.get(P0) == end + 1)
    assert run.code == 0 and appended
    assert run.broker.committed == {P0: end + 1}
    assert len(run.labels()) == 6  # a commit of offsets alone, no output


@pytest.mark.parametrize("mode", MODES)
def test_commits_pass_markers_but_never_a_record_in_flight(mode: str) -> None:
    """Checked at every turn while batches are slow: every record below a committed offset is answered."""
    records, end = transactional(0, 12, 5)
    records_by_offset = {r.offset for r in records}
    violations: list[str] = []
    seen_commits: set[int] = set()
    lock = threading.Lock()

    def during(run: Run, consumer: FakeConsumer) -> None:
        with lock:
            committed = run.broker.committed.get(P0, 0)
            answered = {offset for _, offset in run.answered()}
            missing = sorted(o for o in records_by_offset if o < committed and o not in answered)
            if missing:
                violations.append(f"committed {committed} with {missing} unanswered")
            seen_commits.add(committed)

    run = run_pipeline(mode, records, log_ends={P0: end}, during=during,
                       engine=FakeEngine(before_predict=lambda: time.sleep(0.02)), settings_options={"batch_size": 4})
    assert run.code == 0
    assert not violations, violations[:3]
    assert run.broker.committed == {P0: end}
    assert len(seen_commits) > 2  # commits moved while records were in flight
