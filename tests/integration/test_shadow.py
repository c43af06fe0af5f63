"""A shadow model scores the same batches and never changes the primary outputs (issue 16), real broker."""

from __future__ import annotations

import json
import re

from tests.support.data import json_records
from tests.support.kafka import create_stream, create_topics, produce, read_until
from tests.support.workers import mode_flags, wait_until


def labels_at(messages) -> dict[tuple[int, int], tuple[str, float]]:
    return {m.source(): (json.loads(m.value)["label"], json.loads(m.value)["score"]) for m in messages
            if not m.is_dead_letter}


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def test_a_shadow_leaves_the_primary_outputs_as_they_were(broker, workers, news_docs, unique_name, mode,
                                                          tiny_bundle_dir) -> None:
    bootstrap = broker.bootstrap_servers
    records = json_records(news_docs[:200]) + [("bad", b"\xff not utf-8")]
    plain_topic, plain_labels, plain_dlq = create_stream(bootstrap, f"{unique_name}-a", partitions=2)
    topic, labels, dlq = create_stream(bootstrap, f"{unique_name}-b", partitions=2)
    shadow_topic = f"{topic}.shadow"
    create_topics(bootstrap, [shadow_topic], partitions=2)
    plain = workers.start(bootstrap, plain_topic, f"{unique_name}-ga", *mode_flags(mode))
    shadowed = workers.start(bootstrap, topic, f"{unique_name}-gb", *mode_flags(mode),
                             "--shadow-model", str(tiny_bundle_dir), "--shadow-topic", shadow_topic)
    plain.wait_ready()
    shadowed.wait_ready()
    produce(bootstrap, plain_topic, records)
    produce(bootstrap, topic, records)
    without = read_until(bootstrap, [plain_labels, plain_dlq], len(records), timeout=180)
    with_shadow = read_until(bootstrap, [labels, dlq], len(records), timeout=180)
    assert len(without) == len(with_shadow) == len(records)
    assert labels_at(with_shadow) == labels_at(without)  # same label and score at every input position

    def counted() -> float:
        text = shadowed.get("/metrics")[1]
        return metric(text, "lstm_worker_shadow_records_total") + metric(text, "lstm_worker_shadow_skipped_total")

    wait_until(lambda: counted() >= 200, 60, "the shadow to score or skip every labelled record")
    text = shadowed.get("/metrics")[1]
    scored = metric(text, "lstm_worker_shadow_records_total")
    assert scored > 0 and counted() == 200
    # The shadow is the same model: it agrees on every record it scored, and its labels name it.
    assert metric(text, "lstm_worker_shadow_agreements_total") == scored
    shadow_labels = read_until(bootstrap, [shadow_topic], int(scored), timeout=60)
    assert len(shadow_labels) == scored
    assert all(json.loads(m.value)["model"].startswith("tiny") for m in shadow_labels)
    assert plain.terminate() == 0 and shadowed.terminate() == 0
