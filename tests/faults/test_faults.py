"""Nothing is lost under crashes, broker stalls, poison input, rebalances and restarts.

Each test reconciles every input key against the output and dead-letter
topics, read back with librdkafka.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from tests.faults.harness import (
    WorkerProcess,
    create_topics,
    freeze_broker,
    json_records,
    kill_in_turn,
    malformed_payloads,
    produce,
    read_all,
)

REPORT = Path(os.environ.get("LSTM_FAULTS_REPORT", "artifacts/faults-report.json"))


def record_report(name: str, values: dict) -> None:
    """Keep the measured duplicate counts for the closing note and README."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = values
    REPORT.write_text(json.dumps(data, indent=2))


def start_workers(count: int, broker, topic: str, bundle: Path, tmp_path: Path, registry: list,
                  group: str | None = None) -> list[WorkerProcess]:
    group = group or f"g-{topic}"
    new = [WorkerProcess(broker.bootstrap_servers, topic, bundle, group, tmp_path).start() for _ in range(count)]
    registry.extend(new)
    for worker in new:
        worker.wait_ready()
    return new


def in_background(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_three_sigkills_lose_nothing(broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic = "kills"
    create_topics(broker.bootstrap_servers, topic, partitions=6)
    group = start_workers(3, broker, topic, tiny_bundle_dir, tmp_path, workers)
    records = json_records(real_texts[:1500]) + malformed_payloads(60)
    random.Random(1).shuffle(records)
    producer = in_background(produce, broker.bootstrap_servers, topic, records, 0.008)
    kill_in_turn(group, kills=3, every_s=3)
    producer.join()
    keys = [k for k, _ in records]
    result = read_all(broker.bootstrap_servers, topic, keys, timeout=240)
    assert result.lost(keys) == []
    duplicates = result.duplicates()
    record_report("three_sigkills", {"inputs": len(keys), "duplicates": duplicates,
                                     "duplicate_share": round(duplicates / len(keys), 4)})
    assert duplicates <= 0.2 * len(keys)
    assert all(w.alive() for w in group), "a worker exited that was not killed"
    assert [w.terminate() for w in group] == [0, 0, 0]


def test_broker_freeze_is_survived(broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic = "freeze"
    create_topics(broker.bootstrap_servers, topic, partitions=2)
    (worker,) = start_workers(1, broker, topic, tiny_bundle_dir, tmp_path, workers)
    records = json_records(real_texts[:600])
    producer = in_background(produce, broker.bootstrap_servers, topic, records[:300], 0.005)
    producer.join()
    time.sleep(1)
    freeze_broker(broker.process.pid, 12)
    produce(broker.bootstrap_servers, topic, records[300:])
    keys = [k for k, _ in records]
    result = read_all(broker.bootstrap_servers, topic, keys, timeout=180)
    assert result.lost(keys) == []
    assert worker.alive(), "the worker died while the broker was frozen"
    record_report("broker_freeze_12s", {"inputs": len(keys), "duplicates": result.duplicates()})
    assert worker.terminate() == 0


def test_poison_input_is_dead_lettered_exactly(broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic = "poison"
    create_topics(broker.bootstrap_servers, topic, partitions=3)
    (worker,) = start_workers(1, broker, topic, tiny_bundle_dir, tmp_path, workers)
    good = json_records(real_texts[:500])
    bad = malformed_payloads(330)
    records = good + bad
    random.Random(2).shuffle(records)
    produce(broker.bootstrap_servers, topic, records)
    keys = [k for k, _ in records]
    result = read_all(broker.bootstrap_servers, topic, keys, timeout=180)
    assert {k: result.outputs[k] for k, _ in good} == {k: 1 for k, _ in good}
    assert {k: result.dead[k] for k, _ in bad} == {k: 1 for k, _ in bad}
    assert sum(result.outputs.values()) + sum(result.dead.values()) == len(records)
    assert worker.alive()
    assert worker.terminate() == 0


def test_workers_joining_and_leaving_lose_nothing(broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic = "rebalance"
    create_topics(broker.bootstrap_servers, topic, partitions=6)
    first = start_workers(1, broker, topic, tiny_bundle_dir, tmp_path, workers)[0]
    records = json_records(real_texts[:1200])
    producer = in_background(produce, broker.bootstrap_servers, topic, records, 0.01)
    time.sleep(2)
    second, third = (WorkerProcess(broker.bootstrap_servers, topic, tiny_bundle_dir, f"g-{topic}", tmp_path).start()
                     for _ in range(2))
    workers.extend([second, third])
    time.sleep(4)
    assert first.terminate() == 0
    producer.join()
    keys = [k for k, _ in records]
    result = read_all(broker.bootstrap_servers, topic, keys, timeout=180)
    assert result.lost(keys) == []
    record_report("rebalance", {"inputs": len(keys), "duplicates": result.duplicates()})
    assert [second.terminate(), third.terminate()] == [0, 0]


def test_sigterm_then_restart_produces_no_duplicates(broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic = "restart"
    create_topics(broker.bootstrap_servers, topic, partitions=3)
    (worker,) = start_workers(1, broker, topic, tiny_bundle_dir, tmp_path, workers)
    first = json_records(real_texts[:400], prefix="a")
    produce(broker.bootstrap_servers, topic, first)
    read_all(broker.bootstrap_servers, topic, [k for k, _ in first], timeout=120)
    assert worker.terminate() == 0
    second = json_records(real_texts[400:500], prefix="b")
    produce(broker.bootstrap_servers, topic, second)
    worker.start()
    worker.wait_ready()
    keys = [k for k, _ in first + second]
    result = read_all(broker.bootstrap_servers, topic, keys, timeout=120)
    assert result.lost(keys) == []
    assert result.duplicates() == 0, "a clean restart re-read records that were already committed"
    assert worker.terminate() == 0
