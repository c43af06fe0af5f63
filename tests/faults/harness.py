"""Real processes under real faults: workers we can SIGKILL, a broker we can freeze, and a reconciler.

Inputs are written and every output/dead letter read back with confluent-kafka
(librdkafka), so the accounting never trusts the worker's own Kafka client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from worker.devbroker import free_port

WORKER = str(Path(sys.executable).parent / "lstm-worker")


def create_topics(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = (topic, f"{topic}.labels", f"{topic}.dlq")
    for future in admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1)
                                       for n in names]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], pace_s: float = 0.0) -> None:
    """Write ``(key, value)`` records; ``pace_s`` spreads them out so faults land mid-stream."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)
        if pace_s:
            time.sleep(pace_s)
    assert producer.flush(60) == 0, "the test producer could not deliver every input"


@dataclass
class WorkerProcess:
    bootstrap: str
    topic: str
    bundle: Path
    group: str
    log_dir: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    metrics_port: int = 0
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        self.metrics_port = free_port()
        self.starts += 1
        log = (self.log_dir / f"worker-{self.group}-{id(self)}-{self.starts}.log").open("w")
        command = [WORKER, "run", "--topic", self.topic, "--bootstrap-servers", self.bootstrap,
                   "--group-id", self.group, "--model", str(self.bundle), "--metrics-port", str(self.metrics_port),
                   "--session-timeout-ms", "6000", "--log-format", "json", "--threads", "1", *self.extra]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, "worker exited during start-up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("worker not healthy in time")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.exits.append(self.process.wait())

    def terminate(self, timeout: float = 40) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.exits.append(code)
        return code

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cleanup(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


def high_watermarks(bootstrap: str, partitions: list[tuple[str, int]],
                    timeout: float = 30) -> dict[tuple[str, int], int]:
    """Each partition's high watermark as a fetch reports it.

    Not ListOffsets: Tansu answers ListOffsets(latest) with the last record batch's base offset + 1,
    short of the true end whenever that batch holds more than one record.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watermarks-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    # From the end: any fetch carries the high watermark, so there is no need to read the records too.
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t, p in partitions])
    deadline = time.monotonic() + timeout
    try:
        while True:
            highs = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)[1]
                     for t, p in partitions}
            if all(h >= 0 for h in highs.values()):
                return highs
            if time.monotonic() > deadline:
                unknown = sorted(k for k, h in highs.items() if h < 0)
                raise TimeoutError(f"no fetch reported a high watermark for {unknown}")
            consumer.consume(num_messages=1000, timeout=0.2)
    finally:
        consumer.close()


@dataclass
class Reconciliation:
    outputs: Counter
    dead: Counter
    dead_reasons: Counter

    def lost(self, keys: list[str]) -> list[str]:
        return [k for k in keys if self.outputs[k] + self.dead[k] == 0]

    def duplicates(self) -> int:
        return sum(c - 1 for c in self.outputs.values() if c > 1) + sum(c - 1 for c in self.dead.values() if c > 1)


def read_all(bootstrap: str, topic: str, expected_keys: list[str], timeout: float,
             topics: list[str] | None = None) -> Reconciliation:
    """Read outputs and dead letters until every key is accounted for (or ``timeout``), then drain a bit more.

    ``topics`` replaces the default ``<topic>.labels`` and ``<topic>.dlq``; those ending in .dlq hold dead letters.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reconcile-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(topics or [f"{topic}.labels", f"{topic}.dlq"])
    outputs: Counter = Counter()
    dead: Counter = Counter()
    reasons: Counter = Counter()
    wanted = set(expected_keys)
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    continue
                key = message.key().decode()
                if message.topic().endswith(".dlq"):
                    dead[key] += 1
                    reasons[dict(message.headers() or []).get("error.type", b"?").decode()] += 1
                else:
                    outputs[key] += 1
            if settle_until is None and all(outputs[k] + dead[k] for k in wanted):
                settle_until = time.monotonic() + 3  # pick up late duplicates before counting them
            if settle_until is not None and time.monotonic() > settle_until:
                break
    finally:
        consumer.close()
    return Reconciliation(outputs, dead, reasons)


def json_records(texts: list[str], prefix: str = "doc") -> list[tuple[str, bytes]]:
    return [(f"{prefix}-{i}", json.dumps({"id": f"{prefix}-{i}", "text": t}).encode()) for i, t in enumerate(texts)]


def malformed_payloads(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Hundreds of payloads no model can score, of every shape the issue lists."""
    import random

    rng = random.Random(seed)
    shapes = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\xff",  # random bytes, never UTF-8
        lambda: b"\xc3\x28 invalid utf-8",
        lambda: b"",
        lambda: b" \n\t ",
        lambda: b"x" * 1_100_000,  # over the default 1,000,000-byte limit
        lambda: b'{"text": 42}',
        lambda: b'{"text": {"nested": "json"}}',
        lambda: b'{"id": "no-text"}',
        lambda: b"[1, 2, 3]",
        lambda: b"null",
        lambda: b'{"text": "   "}',
    ]
    return [(f"bad-{i}", shapes[i % len(shapes)]()) for i in range(count)]


def pids_alive(workers: list[WorkerProcess]) -> list[bool]:
    return [w.alive() for w in workers]



def kill_in_turn(group: list[WorkerProcess], kills: int, every_s: float) -> None:
    """SIGKILL the group's workers in turn, ``every_s`` apart, restarting each at once (as Kubernetes would)."""
    for kill in range(kills):
        time.sleep(every_s)
        victim = group[kill % len(group)]
        victim.kill()
        victim.start()


def freeze_broker(broker_pid: int, seconds: float) -> None:
    """SIGSTOP the broker for ``seconds``; it is always resumed, even if the test is interrupted."""
    os.kill(broker_pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(broker_pid, signal.SIGCONT)
