"""An input topic written by a transactional producer, on the real broker, in both delivery modes (issue 17).

Each committed transaction leaves a commit marker after its last record in every partition it wrote: an
offset no consumer receives. A worker that committed "last record + 1" left each drained partition one short
of its log end per marker (lag 1 for ever; a lag-based scaler never scales to zero). The worker commits the
consumer's position once a partition has nothing in flight, so the group's offsets reach the log ends and
its own lag gauge, taken from the broker, reads 0. The lag gauge also keeps moving while fetching is paused.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import json_records
from tests.support.kafka import (
    committed_offsets,
    create_stream,
    high_watermarks,
    produce,
    read_all,
    read_until,
    wait_committed,
)
from tests.support.topic_refusal import WRITES_REFUSED, refuse_writes
from tests.support.workers import WorkerProcess, mode_flags, wait_until

PARTITIONS = 3


def produce_transactions(bootstrap: str, topic: str, records: list[tuple[str, bytes]], per_transaction: int,
                         transactional_id: str) -> None:
    """``records`` in committed transactions of ``per_transaction`` records (keyed: spread over the partitions)."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "partitioner": "murmur2_random"})
    producer.init_transactions(30)
    for start in range(0, len(records), per_transaction):
        producer.begin_transaction()
        for key, value in records[start:start + per_transaction]:
            producer.produce(topic, key=key.encode(), value=value)
        producer.commit_transaction(30)


def lag_series(worker: WorkerProcess) -> dict[int, float]:
    status, body = worker.get("/metrics")
    assert status == 200
    return {int(s.labels["partition"]): s.value for family in text_string_to_metric_families(body)
            if family.name == "lstm_worker_consumer_lag" for s in family.samples}


def test_a_drained_transactional_input_is_committed_at_its_log_end(broker, workers, news_docs, unique_name,
                                                                   mode) -> None:
    bootstrap = broker.bootstrap_servers
    topic, labels, dlq = create_stream(bootstrap, unique_name, partitions=PARTITIONS)
    group = f"{unique_name}-g"
    records = json_records(news_docs[:90])
    produce_transactions(bootstrap, topic, records, per_transaction=15, transactional_id=f"{unique_name}-up")
    inputs = read_all(bootstrap, [topic], "read_committed")
    assert len(inputs) == len(records)
    ends = {p: end for (_, p), end in high_watermarks(bootstrap, [(topic, p) for p in range(PARTITIONS)]).items()}
    last = {p: max(m.offset for m in inputs if m.partition == p) for p in range(PARTITIONS)}
    # The broker's log: each partition ends with a marker after its last record.
    assert all(ends[p] >= last[p] + 2 for p in range(PARTITIONS)), (ends, last)

    worker = workers.start(bootstrap, topic, group, *mode_flags(mode), "--batch-size", "8")
    answered = read_until(bootstrap, [labels, dlq], len(records), timeout=120)
    assert sorted(m.source() for m in answered) == sorted((m.partition, m.offset) for m in inputs)
    committed = wait_committed(bootstrap, group, topic, PARTITIONS, sum(ends.values()))
    assert committed == ends, (committed, ends, worker.log())
    # The worker's lag gauge, from the broker: 0 on every partition (refreshed every 5 s).
    wait_until(lambda: lag_series(worker) == {p: 0.0 for p in range(PARTITIONS)}, 30,
               "lstm_worker_consumer_lag 0 on every partition")
    assert worker.terminate() == 0
    assert committed_offsets(bootstrap, group, topic, PARTITIONS) == ends


@pytest.mark.kafka_only(WRITES_REFUSED)
def test_the_lag_gauge_keeps_moving_while_fetching_is_paused(own_broker, workers, news_docs, unique_name,
                                                            mode) -> None:
    """Every label is refused: the worker stalls and pauses fetching; the lag still counts new input."""
    bootstrap = own_broker.bootstrap_servers
    topic, labels, _ = create_stream(bootstrap, unique_name, partitions=1)
    group = f"{unique_name}-g"
    first = json_records(news_docs[:20], "a")
    produce(bootstrap, topic, first)
    worker = workers.start(bootstrap, topic, group, *mode_flags(mode), "--send-retry-backoff-max-s", "1",
                           "--max-in-flight", "8", "--batch-size", "4")
    assert wait_committed(bootstrap, group, topic, 1, len(first)) == {0: len(first)}, worker.log()
    wait_until(lambda: lag_series(worker) == {0: 0.0}, 30, "lag 0 after the first round")
    refuse_writes(bootstrap, labels)  # from now on every label is refused
    produce(bootstrap, topic, json_records(news_docs[20:40], "b"))
    wait_until(lambda: "lstm_worker_fetch_paused 1.0" in worker.get("/metrics")[1], 60, "fetching paused")
    produce(bootstrap, topic, json_records(news_docs[40:70], "c"))  # arrives while the worker does not fetch
    wait_until(lambda: lag_series(worker) == {0: 50.0}, 30, "lag 50 (20 refused + 30 never fetched)")
    assert committed_offsets(bootstrap, group, topic, 1) == {0: len(first)}
    worker.kill()
