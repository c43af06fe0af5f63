"""Offset bookkeeping: commits never pass a record whose result the broker has not acknowledged."""

from __future__ import annotations

from kafka.structs import TopicPartition

from worker.offsets import OffsetTracker

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def tracker_for(*partitions: TopicPartition) -> OffsetTracker:
    tracker = OffsetTracker()
    tracker.assign(list(partitions))
    return tracker


def test_commit_offset_is_the_lowest_unacknowledged_record():
    tracker = tracker_for(P0)
    tickets = [tracker.register(P0, offset) for offset in range(10, 15)]
    assert tracker.committable() == {P0: 10}
    tracker.ack(tickets[2])
    tracker.ack(tickets[4])  # out of order: 12 and 14 done, 10 still pending
    assert tracker.committable() == {P0: 10}
    tracker.ack(tickets[0])
    assert tracker.committable() == {P0: 11}
    tracker.ack(tickets[1])
    assert tracker.committable() == {P0: 13}
    tracker.ack(tickets[3])
    assert tracker.committable() == {P0: 15}  # all done: one past the last
    assert tracker.pending_count() == 0


def test_partitions_are_independent_and_commits_are_reported_once():
    tracker = tracker_for(P0, P1)
    a, b = tracker.register(P0, 0), tracker.register(P1, 7)
    tracker.ack(b)
    assert tracker.committable() == {P0: 0, P1: 8}
    tracker.mark_committed({P0: 0, P1: 8})
    assert tracker.committable() == {}
    tracker.ack(a)
    assert tracker.committable() == {P0: 1}
    assert tracker.committable([P1]) == {}


def test_revocation_drops_state_and_ignores_late_acks():
    tracker = tracker_for(P0, P1)
    old = [tracker.register(P0, offset) for offset in range(3)]
    other = tracker.register(P1, 0)
    tracker.ack(old[0])
    assert tracker.committable([P0]) == {P0: 1}
    tracker.revoke([P0])
    assert tracker.pending_count() == 1  # only P1's record is still in flight
    assert not tracker.is_current(old[1])
    assert tracker.ack(old[1]) is False and tracker.ack(old[2]) is False
    assert P0 not in tracker.committable()
    # Until the rebalance completes the client may still return records of P0: they are refused.
    assert tracker.register(P0, 3) is None
    assert P0 not in tracker.committable() and tracker.pending_count() == 1
    # Re-assigned later, from the committed offset: the new epoch starts clean.
    tracker.assign([P0])
    fresh = tracker.register(P0, 1)
    assert tracker.is_current(fresh) and not tracker.is_current(old[0])
    tracker.ack(fresh)
    assert tracker.committable() == {P0: 2, P1: 0}
    assert tracker.is_current(other)


def test_unassigned_partitions_are_not_tracked():
    tracker = tracker_for(P0)
    assert tracker.register(P1, 0) is None
    assert tracker.committable() == {}


def test_out_of_order_registration_is_refused():
    tracker = tracker_for(P0)
    tracker.register(P0, 5)
    try:
        tracker.register(P0, 4)
    except ValueError as exc:
        assert "out of order" in str(exc)
    else:
        raise AssertionError("registering a lower offset must fail")


def test_resume_offsets_point_at_the_first_unanswered_record():
    tracker = tracker_for(P0, P1)
    tickets = [tracker.register(P0, offset) for offset in range(316, 320)]
    tracker.ack(tickets[0])
    tracker.ack(tickets[2])
    tracker.mark_committed({P0: 317})
    done = tracker.register(P1, 4)
    tracker.ack(done)
    # Already committed or not: a consumer keeping P0 must read again from 317 (318 was dropped with 317).
    assert tracker.resume_offsets([P0, P1]) == {P0: 317, P1: 5}
    assert tracker.resume_offsets([TopicPartition("in", 9)]) == {}


def test_a_partition_assigned_again_without_a_revocation_starts_over():
    tracker = tracker_for(P0)
    stale = [tracker.register(P0, offset) for offset in range(3)]
    tracker.ack(stale[0])
    assert tracker.resume_offsets([P0]) == {P0: 1}  # where the consumer is rewound to
    tracker.assign([P0])  # no revoke in between
    assert not tracker.is_current(stale[1]) and tracker.pending_count() == 0
    fresh = tracker.register(P0, 1)  # read again from the rewind: no out-of-order refusal
    assert tracker.is_current(fresh)


def test_a_partition_with_nothing_in_flight_commits_the_position_past_its_markers():
    tracker = tracker_for(P0, P1)
    tickets = [tracker.register(P0, offset) for offset in (0, 1, 2, 4, 5)]  # a marker at 3
    for ticket in tickets[:4]:
        tracker.ack(ticket)
    assert tracker.committable(positions={P0: 7}) == {P0: 5}  # 5 is in flight: the position does not count
    tracker.ack(tickets[4])
    assert tracker.committable(positions={P0: 7}) == {P0: 7}  # drained: past the marker at 6
    assert tracker.committable(positions={P0: 5}) == {P0: 6}  # a position behind what was registered: ignored
    assert tracker.committable() == {P0: 6}
    assert tracker.committable(positions={P1: 9}) == {P0: 6, P1: 9}  # nothing read yet: where the consumer is
    assert tracker.committable(positions={P1: 9}, idle_only=True) == {P0: 6, P1: 9}
    tracker.register(P1, 9)
    assert tracker.committable(positions={P1: 11}, idle_only=True) == {P0: 6}


def test_a_batch_transaction_commits_the_position_only_when_nothing_was_read_after_it():
    tracker = tracker_for(P0)
    for offset in (0, 1, 2):
        tracker.register(P0, offset)
    assert tracker.past_markers({P0: 3}, {P0: 4}) == {P0: 4}  # the batch ends what was read: past its marker
    tracker.register(P0, 4)
    assert tracker.past_markers({P0: 3}, {P0: 6}) == {P0: 3}  # 4 was read after the batch: it is not answered
    assert tracker.past_markers({P0: 3}, {}) == {P0: 3}
