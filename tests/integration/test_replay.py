"""``lstm-worker replay`` on the real broker: a bounded slice of history, labelled by a pinned version, then exit 0.

The input's records carry timestamps spread over an hour (set by the producer). A replay from the 30-minute
mark labels exactly the records at or after it, each once, with the pinned version and its job named in every
label, and exits 0 at the end recorded when it started while new records keep arriving; the live group's
committed offsets do not move. A replay stopped by SIGTERM half-way and started again ends with every record of
the slice labelled (at least once: the test reports the duplicates).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.support.kafka import committed_offsets, create_stream, create_topics, read_all, wait_committed
from tests.support.workers import WORKER, wait_until

HOUR_MS = 3_600_000
PARTITIONS = 3


def produce_at(bootstrap: str, topic: str, records: list[tuple[str, str, int]], pace_s: float = 0.0,
               stop: threading.Event | None = None) -> None:
    """(key, text, timestamp ms) records, each with its own record timestamp (CreateTime)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    for key, text, timestamp_ms in records:
        if stop is not None and stop.is_set():
            break
        producer.produce(topic, key=key.encode(), value=json.dumps({"id": key, "text": text}).encode(),
                         timestamp=timestamp_ms)
        producer.poll(0)
        if pace_s:
            time.sleep(pace_s)
    assert producer.flush(60) == 0


def spread_over_an_hour(docs: list[str], prefix: str, now_ms: int) -> list[tuple[str, str, int]]:
    """One record per document, timestamps evenly spread over the hour before ``now_ms``."""
    step = HOUR_MS // len(docs)
    return [(f"{prefix}-{i}", doc, now_ms - HOUR_MS + i * step) for i, doc in enumerate(docs)]


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+00:00"


def labelled(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` so far; 0 while the broker still calls a topic just created unknown."""
    try:
        return len(read_all(bootstrap, [topic]))
    except AssertionError as exc:
        if "UNKNOWN_TOPIC_OR_PART" not in str(exc):
            raise
        return 0


class Replay:
    """One ``lstm-worker replay`` process; its JSON log is kept across restarts."""

    def __init__(self, log_path: Path, *args: str):
        self.log_path, self.args = log_path, args
        self.process: subprocess.Popen | None = None

    def start(self) -> Replay:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen([WORKER, "replay", "--log-format", "json", "--threads", "1", *self.args],
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float = 90) -> int:
        return self.process.wait(timeout)

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.kafka_only("Tansu answers ListOffsets by timestamp (offsets_for_times) with the log's first offset")
def test_replay_from_the_half_hour_mark_labels_exactly_that_slice_once_with_the_pinned_version(
        broker, workers, news_docs, unique_name, two_version_store, tmp_path) -> None:
    bootstrap = broker.bootstrap_servers
    topic, group, output = unique_name, f"{unique_name}-g", f"{unique_name}.replayed"
    create_stream(bootstrap, topic, partitions=PARTITIONS)
    create_topics(bootstrap, [output, f"{output}.dlq"], partitions=PARTITIONS)
    now_ms = int(time.time() * 1000)
    history = spread_over_an_hour(news_docs[:120], "h", now_ms)
    produce_at(bootstrap, topic, history)
    live = workers.start(bootstrap, topic, group)  # the live group labels everything, then stops
    assert sum(wait_committed(bootstrap, group, topic, PARTITIONS, len(history)).values()) == len(history)
    assert live.terminate() == 0, live.log()
    live_offsets = committed_offsets(bootstrap, group, topic, PARTITIONS)

    store = tmp_path / "models"
    shutil.copytree(two_version_store[0], store)  # version 1 is CURRENT; the replay pins 2
    mark_ms = now_ms - HOUR_MS // 2
    arriving = threading.Event()
    late = [(f"late-{i}", doc, int(time.time() * 1000)) for i, doc in enumerate(news_docs[120:320])]
    producer = threading.Thread(target=produce_at, args=(bootstrap, topic, late, 0.02, arriving), daemon=True)
    producer.start()  # new records keep arriving while the replay runs
    time.sleep(0.5)
    replay = Replay(tmp_path / "replay.log", "--topic", topic, "--bootstrap-servers", bootstrap, "--job", "half",
                    "--output-topic", output, "--model", str(store), "--model-version", "2",
                    "--from-time", iso(mark_ms)).start()
    try:
        code = replay.wait(90)
    finally:
        replay.kill()
        arriving.set()
        producer.join(30)
    assert code == 0, replay.log()

    started = replay.events("replay_started")[-1]["partitions"]
    ends = {int(name.rsplit("[", 1)[1].rstrip("]")): end for name, (_, end) in started.items()}
    inputs = read_all(bootstrap, [topic])
    assert any(m.offset >= ends[m.partition] for m in inputs), "no record arrived after the replay started"
    in_slice = sorted(json.loads(m.value)["id"] for m in inputs
                      if m.offset < ends[m.partition] and m.timestamp_ms >= mark_ms)
    assert {key for key, _, timestamp in history if timestamp >= mark_ms} <= set(in_slice)
    assert not {key for key, _, timestamp in history if timestamp < mark_ms} & set(in_slice)
    labels = read_all(bootstrap, [output, f"{output}.dlq"])
    bodies = [json.loads(m.value) for m in labels]
    replayed = Counter(body["id"] for body in bodies)
    assert sorted(replayed) == in_slice and set(replayed.values()) == {1}, replay.log()
    assert {body["model"] for body in bodies} == {"tiny@2"}
    assert {json.dumps(body["replay"]) for body in bodies} == {json.dumps({"job": "half"})}
    finished = replay.events("replay_finished")
    assert finished and finished[-1]["complete"] is True and finished[-1]["left"] == 0, replay.log()
    assert finished[-1]["total"] == len(in_slice)
    assert committed_offsets(bootstrap, group, topic, PARTITIONS) == live_offsets


def test_a_replay_stopped_half_way_goes_on_from_its_checkpoint(broker, news_docs, unique_name, tiny_bundle_dir,
                                                              tmp_path, capsys) -> None:
    bootstrap = broker.bootstrap_servers
    topic, output = unique_name, f"{unique_name}.replayed"
    create_stream(bootstrap, topic, partitions=PARTITIONS)
    create_topics(bootstrap, [output, f"{output}.dlq"], partitions=PARTITIONS)
    now_ms = int(time.time() * 1000)
    history = spread_over_an_hour((news_docs * 2)[:600], "h", now_ms)
    produce_at(bootstrap, topic, history)
    # One record in flight at a time: slow enough that SIGTERM lands half-way.
    args = ("--topic", topic, "--bootstrap-servers", bootstrap, "--job", "resumed", "--output-topic", output,
            "--model", str(tiny_bundle_dir), "--max-in-flight", "1", "--batch-size", "1", "--max-wait-ms", "0",
            "--commit-interval-ms", "100")
    replay = Replay(tmp_path / "replay.log", *args).start()
    try:
        wait_until(lambda: labelled(bootstrap, output) >= 100, 60, "the first 100 replayed labels")
        replay.process.send_signal(signal.SIGTERM)
        assert replay.wait(60) == 0, replay.log()
        first = replay.events("replay_finished")[-1]
        assert first["complete"] is False and 0 < first["done"] < len(history), replay.log()

        replay.start()
        assert replay.wait(90) == 0, replay.log()
    finally:
        replay.kill()
    second = replay.events("replay_finished")[-1]
    assert second["complete"] is True and second["total"] == len(history), replay.log()
    assert replay.events("replay_started")[-1]["done"] == first["done"]  # went on from the checkpoint

    labels = read_all(bootstrap, [output, f"{output}.dlq"])
    replayed = Counter(json.loads(m.value)["id"] for m in labels if not m.is_dead_letter)
    assert sorted(replayed) == sorted(key for key, _, _ in history), replay.log()
    duplicates = sum(count - 1 for count in replayed.values())
    assert duplicates <= len(history) - first["done"]  # only what was answered after the last commit
    with capsys.disabled():
        print(f"\nreplay stopped at {first['done']} of {len(history)}, restarted: {duplicates} duplicates")
