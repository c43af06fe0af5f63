"""An output topic whose ``max.message.bytes`` is below some labels, on Apache Kafka: a real RecordTooLarge.

The broker refuses a whole batch, and kafka-python fails the sends queued behind it with the same error (and,
for an idempotent producer, every later send until it is replaced): the worker must dead-letter only the labels
that do not fit, label every other record, and lose nothing, in both delivery modes. The limit is the test's own
output topic's, so the session's broker serves (the coordinator's transaction markers are small and still fit).
"""

from __future__ import annotations

import json

import pytest

from tests.support.data import json_records
from tests.support.kafka import create_stream, produce, read_all, reconcile, result_topics
from tests.support.topic_refusal import SIZE_LIMITED, limit_record_size
from tests.support.workers import EXACTLY_ONCE, mode_flags

TOPIC_LIMIT_BYTES = 100_000
BIG_ID_BYTES = 300_000  # the label repeats the input's id, so it is three times the topic's limit


@pytest.mark.kafka_only(SIZE_LIMITED)
def test_only_labels_over_the_topic_limit_are_dead_lettered(broker, real_texts, workers, mode,
                                                            unique_name) -> None:
    topic, bootstrap, partitions = unique_name, broker.bootstrap_servers, 2
    labels_topic, dlq_topic = result_topics(topic)
    create_stream(bootstrap, topic, partitions)
    limit_record_size(bootstrap, labels_topic, TOPIC_LIMIT_BYTES)
    normal = json_records(real_texts[:200])
    big = [(f"big-{i}", json.dumps({"id": f"big-{i}-" + "i" * BIG_ID_BYTES, "text": real_texts[200 + i]}).encode())
           for i in range(3)]
    # The big ones among the normal ones, so their batches hold labels that fit.
    records = normal[:50] + big[:1] + normal[50:120] + big[1:] + normal[120:]
    worker = workers.start(bootstrap, topic, f"g-{topic}", *mode_flags(mode))
    worker.wait_ready()
    produce(bootstrap, topic, records)

    keys = [key for key, _ in records]
    isolation = "read_committed" if mode == EXACTLY_ONCE else "read_uncommitted"
    result = reconcile(bootstrap, topic, keys, timeout=180, isolation_level=isolation)
    assert result.lost(keys) == [], worker.log()
    assert {key for key in keys if result.dead[key]} == {key for key, _ in big}, worker.log()
    assert all(result.outputs[key] == 1 for key, _ in normal), worker.log()
    assert result.dead_reasons == {"output_too_large": 3}
    if mode == EXACTLY_ONCE:
        assert result.duplicates() == 0

    # Each dead letter carries its input whole (it fits the dead-letter topic's default limit) and its source.
    inputs = dict(big)
    for letter in read_all(bootstrap, [dlq_topic], isolation_level=isolation):
        key = letter.key.decode()
        assert letter.value == inputs[key]
        assert letter.header("error.type") == b"output_too_large"
        assert letter.header("error.value_truncated") is None
        assert letter.source()[0] in range(partitions)
    assert worker.alive() and worker.get("/readyz")[0] == 200
    assert worker.terminate() == 0
