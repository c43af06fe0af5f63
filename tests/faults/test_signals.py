"""The second SIGTERM/SIGINT exits at once (128 + signum) while the first one is still draining.

The drain is made long for certain: the broker is frozen (SIGSTOP) under a worker with in-flight work,
so its flush and commit wait on a broker that does not answer, within a drain budget far longer than
this test waits. After the hard exit nothing committed is lost: a restart answers every input.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.data import json_records
from tests.support.kafka import create_stream, produce, read_until, reconcile
from tests.support.workers import frozen, mode_flags


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_exits_at_once_while_the_first_drains(own_broker, real_texts, workers, mode, signum) -> None:
    topic, bootstrap = "signals", own_broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=2)
    worker = workers.start(bootstrap, topic, "g-signals", *mode_flags(mode), "--shutdown-timeout-s", "300",
                           "--batch-size", "8")
    worker.wait_ready()
    records = json_records(real_texts[:600])
    produce(bootstrap, topic, records)
    read_until(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], expected=1)  # work is under way
    with frozen(own_broker.process.pid):
        worker.send_signal(signum)
        time.sleep(3)
        assert worker.alive(), f"the first signal did not leave the worker draining:\n{worker.log()}"
        worker.send_signal(signum)
        code = worker.wait(timeout=20)  # the first drain alone would take up to 300 s against a frozen broker
    assert code == 128 + signum, worker.log()

    worker.extra = mode_flags(mode)
    worker.start()
    keys = [k for k, _ in records]
    assert reconcile(bootstrap, topic, keys, timeout=180).lost(keys) == []
    assert worker.terminate() == 0, worker.log()
