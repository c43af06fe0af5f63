"""`lstm-worker run` end to end on a real broker, with the real tiny bundle and real 20 Newsgroups text.

One worker classifies a mixed stream (JSON with ids, plain text, malformed
records); a restart in the same group then proves that nothing committed is
read again. Every test runs in both delivery modes (the ``mode`` fixture): they must behave the same.
No transaction aborts in these runs, so even on Tansu (which hands aborted records to read_committed
readers) each input has exactly one result in both modes.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from core.bundle import load_bundle
from core.engine import InferenceEngine
from tests.support.brokers import Broker
from tests.support.kafka import Message, create_stream, produce, read_all, read_until
from tests.support.workers import WorkerPool, mode_flags

MAX_MESSAGE_BYTES = 200_000
TOP_K = 3


def offline_predictions(bundle_dir: Path, texts: list[str]) -> list:
    engine = InferenceEngine(load_bundle(bundle_dir), provider="cpu", threads=1)
    return engine.predict_texts(texts, top_k=TOP_K)


def metric_value(metrics_text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, metrics_text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


# (key, value, expected reason): every kind of record the contract says cannot be classified.
MALFORMED = [
    (b"bad-utf8", b"caf\xe9 au lait \xff\xfe", "invalid_utf8"),
    (b"bad-empty", b"", "empty_text"),
    (b"bad-whitespace", b"  \n\t  ", "empty_text"),
    (b"bad-oversize", b"word " * (MAX_MESSAGE_BYTES // 5 + 10), "oversize"),
    (b"bad-json-no-text", json.dumps({"id": "x1", "body": "no text field"}).encode(), "missing_text"),
    (b"bad-json-number-text", json.dumps({"id": "x2", "text": 42}).encode(), "missing_text"),
    (b"bad-json-array", b'["an", "array"]', "not_json_object"),
    (b"bad-json-null", b"null", "not_json_object"),
    (b"bad-tombstone", None, "null_value"),
]


@pytest.mark.tansu_smoke
def test_stream_is_labelled_like_offline_dead_letters_explained_and_restart_rereads_nothing(
    broker: Broker, workers: WorkerPool, tiny_bundle_dir: Path, news_docs: list[str], unique_name: str, mode: str
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, output, dlq = create_stream(bootstrap, unique_name, partitions=3)
    docs = [d for d in news_docs if len(d.encode()) < MAX_MESSAGE_BYTES]
    assert len(docs) >= 300

    # Even docs as JSON with an id, odd docs as plain text (id falls back to the key); one without a key.
    records, expected = [], {}
    for i, doc in enumerate(docs):
        key = f"key-{i}".encode()
        trace = [("traceparent", f"00-{i:032x}-{i:016x}-01".encode())]
        if i % 2 == 0:
            records.append((key, json.dumps({"id": f"doc-{i}", "text": doc}).encode(), trace))
            expected[f"doc-{i}"] = (key, doc, trace[0][1])
        else:
            records.append((key, doc.encode("utf-8"), trace))
            expected[f"key-{i}"] = (key, doc, trace[0][1])
    unkeyed_text = docs[0][:500]
    records.append((None, unkeyed_text.encode(), []))
    records += [(key, value, [("traceparent", b"trace-" + key)]) for key, value, _ in MALFORMED]
    produce(bootstrap, topic, records)

    worker = workers.start(bootstrap, topic, unique_name, *mode_flags(mode), "--max-message-bytes",
                           str(MAX_MESSAGE_BYTES),
                           "--top-k", str(TOP_K), "--batch-size", "32", "--max-wait-ms", "10")
    worker.wait_ready()
    messages = read_until(bootstrap, [output, dlq], expected=len(records))
    metrics_status, metrics_text = worker.get("/metrics")
    health = worker.get("/healthz")
    ready = worker.get("/readyz")
    maps = worker.mapped_files()
    assert worker.terminate() == 0, worker.log()

    inputs = {(m.partition, m.offset): m for m in read_all(bootstrap, [topic])}
    outputs = [m for m in messages if m.topic == output]
    dead = {m.key: m for m in messages if m.topic == dlq}
    assert len(outputs) == len(expected) + 1 and len(dead) == len(MALFORMED), worker.log()

    # Labels: the same as the offline engine on the same texts, id and key carried through.
    bundle = load_bundle(tiny_bundle_dir)
    by_id = {json.loads(m.value)["id"]: m for m in outputs}
    ids = list(expected)
    offline = offline_predictions(tiny_bundle_dir, [expected[i][1] for i in ids])
    for record_id, prediction in zip(ids, offline, strict=True):
        message = by_id[record_id]
        body = json.loads(message.value)
        assert message.key == expected[record_id][0]
        assert body["label"] == prediction.label, record_id
        assert body["score"] == pytest.approx(prediction.score, abs=1e-4)
        assert [t["label"] for t in body["top_k"]] == [label for label, _ in prediction.top_k]
        assert body["model"] == bundle.model_id
        assert body["source"]["topic"] == topic
        assert inputs[(body["source"]["partition"], body["source"]["offset"])].key == message.key
        assert message.header("content-type") == b"application/json"
        assert message.header("traceparent") == expected[record_id][2]
    unkeyed = [m for m in outputs if m.key is None]
    assert len(unkeyed) == 1
    source = json.loads(unkeyed[0].value)["source"]
    assert json.loads(unkeyed[0].value)["id"] == f"{topic}:{source['partition']}:{source['offset']}"

    # Per input partition, labels are produced in input order (same key -> same partition in and out).
    offsets_by_partition: dict[int, list[int]] = defaultdict(list)
    for message in sorted((m for m in outputs if m.key is not None), key=lambda m: (m.partition, m.offset)):
        source = json.loads(message.value)["source"]
        assert source["partition"] == message.partition
        offsets_by_partition[message.partition].append(source["offset"])
    for offsets in offsets_by_partition.values():
        assert offsets == sorted(offsets)

    # Dead letters: original key, value and headers, plus why and where from.
    for key, value, reason in MALFORMED:
        letter = dead[key]
        assert letter.value == value
        assert letter.header("error.type") == reason.encode()
        assert letter.header("error.message")
        assert letter.header("traceparent") == b"trace-" + key
        assert letter.header("source.topic") == topic.encode()
        original = inputs[(int(letter.header("source.partition")), int(letter.header("source.offset")))]
        assert (original.key, original.value) == (key, value)

    # Observability, and serving stayed torch-free.
    assert metrics_status == 200
    assert metric_value(metrics_text, "lstm_worker_records_in_total") == len(records)
    assert metric_value(metrics_text, "lstm_worker_dead_letters_total", 'reason="empty_text"') == 2
    assert "lstm_worker_inference_seconds_count" in metrics_text
    assert health[0] == 200 and ready[0] == 200
    assert "libtorch" not in maps and "/torch/" not in maps

    # Restart in the same group: only the new records are read (everything before was committed).
    late = [(f"late-{i}".encode(), json.dumps({"id": f"late-{i}", "text": d}).encode(), [])
            for i, d in enumerate(docs[:15])]
    produce(bootstrap, topic, late)
    again = workers.start(bootstrap, topic, unique_name, *mode_flags(mode), "--max-message-bytes",
                          str(MAX_MESSAGE_BYTES))
    again.wait_ready()
    read_until(bootstrap, [output, dlq], expected=len(records) + len(late))
    _, metrics_text = again.get("/metrics")
    assert again.terminate() == 0, again.log()
    assert metric_value(metrics_text, "lstm_worker_records_in_total") == len(late)
    everything = read_all(bootstrap, [output, dlq])
    assert len(everything) == len(records) + len(late)  # no duplicates, nothing lost
    late_ids = {json.loads(m.value)["id"] for m in everything if m.topic == output} - set(by_id)
    assert late_ids == {f"late-{i}" for i in range(len(late))}


def test_dead_letter_source_headers_point_at_the_input(
    broker: Broker, workers: WorkerPool, unique_name: str, mode: str
) -> None:
    """With --input-format json, plain text is a dead letter whose source headers locate the original."""
    bootstrap = broker.bootstrap_servers
    topic, output, dlq = create_stream(bootstrap, unique_name, partitions=1)
    produce(bootstrap, topic, [(b"a", b"plain text, not JSON"), (b"b", b'{"text": "fine json"}')])
    worker = workers.start(bootstrap, topic, unique_name, *mode_flags(mode), "--input-format", "json")
    worker.wait_ready()
    messages = read_until(bootstrap, [output, dlq], expected=2)
    assert worker.terminate() == 0, worker.log()
    letter = next(m for m in messages if m.topic == dlq)
    labelled: Message = next(m for m in messages if m.topic == output)
    assert letter.header("error.type") == b"invalid_json"
    assert (letter.header("source.partition"), letter.header("source.offset")) == (b"0", b"0")
    assert json.loads(labelled.value)["id"] == "b"


@pytest.mark.tansu_smoke
def test_sigterm_mid_stream_drains_and_restart_completes_without_loss_or_duplicates(
    broker: Broker, workers: WorkerPool, news_docs: list[str], unique_name: str, mode: str
) -> None:
    """A clean drain commits everything it polled: first run + restart = every record exactly once."""
    bootstrap = broker.bootstrap_servers
    topic, output, dlq = create_stream(bootstrap, unique_name, partitions=3)
    records = [(f"k{i}".encode(), json.dumps({"id": f"r{i}", "text": news_docs[i % len(news_docs)]}).encode(), [])
               for i in range(1200)]
    produce(bootstrap, topic, records)

    first = workers.start(bootstrap, topic, unique_name, *mode_flags(mode), "--batch-size", "4", "--max-wait-ms", "0")
    first.wait_ready()
    read_until(bootstrap, [output], expected=1)  # SIGTERM while the stream is being worked through
    assert first.terminate() == 0, first.log()

    second = workers.start(bootstrap, topic, unique_name, *mode_flags(mode))
    second.wait_ready()
    read_until(bootstrap, [output], expected=len(records))
    assert second.terminate() == 0, second.log()

    ids = [json.loads(m.value)["id"] for m in read_all(bootstrap, [output, dlq])]
    assert sorted(ids) == sorted(f"r{i}" for i in range(len(records)))
