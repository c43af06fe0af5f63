"""``bench.rolling_restart``'s steady stream: a producer at a fixed rate, a reader of every output, and the
gaps and latency of a time window of outputs.

Outputs are read with confluent-kafka (librdkafka), a different client from the worker's; an
output's time is its CreateTime, set by the worker's producer.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

PARTITIONS = 6


class Stream:
    """Producer and reader threads: what was sent when, and every output's CreateTime."""

    def __init__(self, bootstrap: str, topic: str, texts: list[str], rate: float):
        self.bootstrap, self.topic, self.texts, self.rate = bootstrap, topic, texts, rate
        self.sent: dict[str, tuple[int, float]] = {}  # key -> (input partition, sent epoch s)
        self.outputs: list[tuple[str, float]] = []  # (key, output CreateTime epoch s), every delivery
        self.stop_producing = threading.Event()
        self.stop_reading = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _produce(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        start, i = time.perf_counter(), 0
        while not self.stop_producing.is_set():
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            partition = i % PARTITIONS
            key = f"{partition}:{i}"
            with self.lock:
                self.sent[key] = (partition, time.time())
            value = json.dumps({"id": key, "text": self.texts[i % len(self.texts)]}).encode()
            producer.produce(self.topic, key=key.encode(), value=value, partition=partition)
            producer.poll(0)
            i += 1
        producer.flush(30)

    def _read(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"rr-reader-{time.time_ns()}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition(f"{self.topic}.labels", p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        try:
            while not self.stop_reading.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is None:
                        with self.lock:
                            self.outputs.append((message.key().decode(), message.timestamp()[1] / 1000))
        finally:
            consumer.close()

    def delivered(self) -> set[str]:
        with self.lock:
            return {key for key, _ in self.outputs}


def window_stats(stream: Stream, start: float, end: float) -> dict:
    """Gaps and latency of the outputs whose CreateTime falls in [start, end]."""
    with stream.lock:
        outputs = [(k, t) for k, t in stream.outputs if start <= t <= end]
        sent = dict(stream.sent)
    times = sorted(t for _, t in outputs)
    edges = [start, *times, end]
    gaps = np.diff(edges) if len(edges) > 1 else np.array([end - start])
    per_partition: dict[int, float] = {}
    for partition in range(PARTITIONS):
        ts = sorted(t for k, t in outputs if sent.get(k, (-1, 0))[0] == partition)
        if ts:
            per_partition[partition] = float(np.diff([start, *ts, end]).max())
        else:
            per_partition[partition] = end - start
    latencies = np.array([t - sent[k][1] for k, t in outputs if k in sent]) * 1000
    long_gaps = [(round(float(edges[i]) - start, 2), round(float(g), 2)) for i, g in enumerate(gaps) if g > 1.0]
    result = {
        "seconds": round(end - start, 2),
        "gaps_over_1s": [{"at_s": at, "length_s": length} for at, length in long_gaps],
        "outputs": len(outputs),
        "max_gap_s": round(float(gaps.max()), 3),
        "max_gap_per_partition_s": {str(p): round(g, 3) for p, g in per_partition.items()},
        "max_partition_gap_s": round(max(per_partition.values()), 3),
    }
    if len(latencies):
        result["latency_ms"] = {q: round(float(np.percentile(latencies, int(q[1:]))), 1)
                                for q in ("p50", "p99")} | {"max": round(float(latencies.max()), 1)}
    return result
