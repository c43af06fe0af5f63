"""The broker unreachable for a minute mid-stream: the worker stays up, reports not ready, then resumes.

The Tansu process is frozen (SIGSTOP) for 60 s while records are being worked through, then resumed
(SIGCONT). /readyz is sampled all along: it must report not ready at some point during the outage or
right after it, the worker must never exit, and every input ends with a label or a dead letter.
"""

from __future__ import annotations

import threading
import time

from tests.support.data import json_records, malformed_payloads
from tests.support.kafka import create_stream, produce, read_until, reconcile
from tests.support.report import record_report
from tests.support.workers import AT_LEAST_ONCE, frozen, mode_flags

OUTAGE_S = 60


def sample_readyz(worker, until: threading.Event, samples: list[tuple[float, int]]) -> None:
    while not until.is_set():
        samples.append((time.monotonic(), worker.status("/readyz", timeout=2)))
        until.wait(0.5)


def test_a_minute_without_broker_is_survived_and_reported(own_broker, real_texts, workers, mode) -> None:
    topic, bootstrap = "outage", own_broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=2)
    worker = workers.start(bootstrap, topic, "g-outage", *mode_flags(mode))
    worker.wait_ready()
    records = json_records(real_texts[:900]) + malformed_payloads(30)
    first, second = records[:600], records[600:]
    produce(bootstrap, topic, first)
    read_until(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], expected=50)  # mid-stream
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_readyz, args=(worker, stop, samples), daemon=True)
    sampler.start()
    with frozen(own_broker.process.pid):
        outage_started = time.monotonic()
        time.sleep(OUTAGE_S)
        assert worker.alive(), f"the worker exited while the broker was unreachable:\n{worker.log()}"
    resumed = time.monotonic()
    time.sleep(30)  # "right after": until the worker has noticed and recovered
    stop.set()
    sampler.join(10)
    produce(bootstrap, topic, second)
    keys = [k for k, _ in records]
    result = reconcile(bootstrap, topic, keys, timeout=240)
    assert result.lost(keys) == []
    assert worker.alive(), worker.log()
    during = [status for when, status in samples if outage_started <= when]
    assert 503 in during, (f"/readyz never reported not ready during the outage or the 30 s after it "
                           f"(statuses seen: {sorted(set(during))}):\n{worker.log()}")
    assert worker.status("/readyz") == 200, worker.log()
    name = "broker_outage_60s" + ("" if mode == AT_LEAST_ONCE else "_exactly_once")
    record_report(name, {"inputs": len(keys), "duplicates": result.duplicates(),
                         "readyz_503_samples": during.count(503),
                         "seconds_not_ready_after_resume": round(sum(0.5 for when, s in samples
                                                                     if when >= resumed and s != 200), 1)})
    assert worker.terminate() == 0, worker.log()
