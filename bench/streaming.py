"""The worker end to end through a real broker: throughput, latency under offered load, RSS, start-up time.

Inputs are written and outputs read with confluent-kafka (librdkafka), a
different client from the worker's, so the measurement does not share the
worker's Kafka code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, payloads: Sequence[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "none"})
    for key, value in payloads:
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)
    producer.flush(60)


def output_consumer(bootstrap: str, topic: str, partitions: int) -> Consumer:
    """Assigned (not subscribed) from the beginning: no group join delays the first read."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-reader-{time.time_ns()}",
        "enable.auto.commit": False, "fetch.wait.max.ms": 10,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    return consumer


def wait_http(url: str, timeout: float) -> float:
    """Seconds until ``url`` answers 200."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def rss_mb(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    names = (("rss_mb", "VmRSS"), ("peak_rss_mb", "VmHWM"))
    return {key: round(int(fields[name].split()[0]) / 1024, 1) for key, name in names}


def start_worker(bootstrap: str, topic: str, bundle: Path, metrics_port: int, threads: int, provider: str,
                 extra: Sequence[str] = ()) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "lstm-worker"), "run", "--topic", topic, "--bootstrap-servers", bootstrap,
        "--group-id", f"bench-{topic}", "--model", str(bundle), "--metrics-port", str(metrics_port),
        "--threads", str(threads), "--provider", provider, "--session-timeout-ms", "6000", "--log-format", "json",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def output_time(message) -> float:
    """When the worker produced this output: the record's CreateTime, set by the worker's producer.

    Reading it off the record, not off our clock at receipt, keeps the reader's
    own fetch delays out of the measurement.
    """
    return message.timestamp()[1] / 1000


def collect(consumer: Consumer, expected: int, timeout: float, prefix: str = "") -> dict[str, float]:
    """Receive ``expected`` outputs whose key starts with ``prefix`` (or until ``timeout``); id → output time.

    The prefix keeps a late output of an earlier measurement on the same topic from being counted.
    """
    received: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(received) < expected and time.perf_counter() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.2):
            key = message.key().decode() if message.error() is None else ""
            if key.startswith(prefix):
                received[key] = output_time(message)  # output key = input key (contract)
    return received


def measure_worker(bootstrap: str, bundle: Path, texts: Sequence[str], *, metrics_port: int, threads: int,
                   provider: str, latency_seconds: float, partitions: int = 3, extra: Sequence[str] = (),
                   latency_rate: float | None = None, curve_rates: Sequence[float] = ()) -> dict:
    """``extra``: more `lstm-worker run` options (e.g. ``--exactly-once``).

    The latency run offers ``latency_rate`` docs/s (default: half of this run's throughput);
    ``latency_seconds=0`` skips it. ``curve_rates``: further offered loads, each measured as long
    on the same worker afterwards; with them the result has ``latency_curve``, every point by load.
    """
    run_id = f"{time.strftime('%H%M%S')}-{time.time_ns() % 1_000_000}"
    topic = f"bench-in-{run_id}"
    create_topics(bootstrap, [topic, f"{topic}.labels", f"{topic}.dlq"], partitions)
    produce(bootstrap, topic, [(str(i), json.dumps({"id": str(i), "text": t}).encode()) for i, t in enumerate(texts)])
    consumer = output_consumer(bootstrap, f"{topic}.labels", partitions)
    started = time.time()
    worker = start_worker(bootstrap, topic, bundle, metrics_port, threads, provider, extra)
    try:
        ready_s = wait_http(f"http://127.0.0.1:{metrics_port}/readyz", timeout=120)
        received = collect(consumer, len(texts), timeout=600)
        if len(received) < len(texts):
            raise RuntimeError(f"worker produced {len(received)} of {len(texts)} outputs")
        times = sorted(received.values())
        throughput = (len(times) - 1) / (times[-1] - times[0])
        memory = rss_mb(worker.pid)
        latency, curve = None, []
        if latency_seconds > 0:
            latency = offered_load_latency(bootstrap, topic, consumer, texts, rate=latency_rate or throughput / 2,
                                           seconds=latency_seconds)
            curve = [latency, *(latency_point(bootstrap, topic, consumer, texts, rate, latency_seconds, f"load{n}-")
                                for n, rate in enumerate(curve_rates))]
        memory_after = rss_mb(worker.pid)
        stop_started = time.perf_counter()
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=60)
        return {
            "docs": len(texts),
            "docs_per_s": round(throughput, 1),
            "startup_to_ready_s": round(ready_s, 2),
            "process_start_to_first_output_s": round(times[0] - started, 2),
            "rss_mb": max(memory["rss_mb"], memory_after["rss_mb"]),
            "peak_rss_mb": memory_after["peak_rss_mb"],
            "latency": latency,
            **({"latency_curve": sorted(curve, key=lambda p: p["offered_docs_per_s"])} if curve_rates else {}),
            "sigterm_exit_code": exit_code,
            "sigterm_drain_s": round(time.perf_counter() - stop_started, 2),
        }
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        consumer.close()


def latency_point(bootstrap: str, topic: str, consumer: Consumer, texts: Sequence[str], rate: float,
                  seconds: float, prefix: str) -> dict:
    """One point of the latency curve; a load the worker cannot answer in time is recorded as such."""
    try:
        return offered_load_latency(bootstrap, topic, consumer, texts, rate=rate, seconds=seconds, prefix=prefix)
    except RuntimeError as exc:
        return {"offered_docs_per_s": round(rate, 1), "error": str(exc)}


def offered_load_latency(bootstrap: str, topic: str, consumer: Consumer, texts: Sequence[str], *, rate: float,
                         seconds: float, prefix: str = "lat-") -> dict:
    """Send at a steady ``rate`` for ``seconds``; latency = output CreateTime - input sent, per message.

    The outputs are read after the run, not during it: their CreateTime (set by
    the worker) is what is measured, so reading them concurrently would only
    take CPU from the worker on a machine the load generator shares with it.
    """
    producer = Producer({"bootstrap.servers": bootstrap})  # librdkafka defaults (linger.ms 5), like a real producer
    count = max(1, int(rate * seconds))
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key = f"{prefix}{i}"
        sent[key] = time.time()
        producer.produce(topic, key=key.encode(), value=json.dumps({"id": key, "text": texts[i % len(texts)]}).encode())
        producer.poll(0)
    producer.flush(30)
    received = collect(consumer, count, timeout=60, prefix=prefix)
    latencies = np.array([received[k] - sent[k] for k in sent if k in received]) * 1000
    if len(latencies) < count:
        raise RuntimeError(f"latency run: {count - len(latencies)} of {count} outputs missing")
    return {
        "offered_docs_per_s": round(rate, 1),
        "messages": count,
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(latencies.max()), 1),
    }



