"""All faults at once, shaped like the reliability bar: 3 workers on 6 partitions, 3 SIGKILLs,
a 10 s broker freeze and malformed payloads mixed into 3,000 real documents.

The separate tests in ``test_faults.py`` isolate each fault; this one checks they do not compound.
"""

from __future__ import annotations

import random

from tests.support.data import json_records, malformed_payloads
from tests.support.kafka import create_stream, produce, reconcile
from tests.support.report import record_report
from tests.support.workers import freeze, in_background, kill_in_turn


def test_kills_freeze_and_poison_together(own_broker, real_texts, workers) -> None:
    topic = "bar"
    create_stream(own_broker.bootstrap_servers, topic, partitions=6)
    group = workers.start_group(own_broker.bootstrap_servers, topic, f"g-{topic}", 3)
    good = json_records(real_texts[:3000])
    bad = malformed_payloads(120)
    records = good + bad
    random.Random(3).shuffle(records)
    producer = in_background(produce, own_broker.bootstrap_servers, topic, records, 0.008)
    # Kills first, then the freeze: a worker restarted into a frozen broker would (rightly) report the
    # broker unreachable at start-up, which is a different test.
    kill_in_turn(group, kills=3, every_s=3)
    for worker in group:
        worker.wait_healthy()
    freeze(own_broker.process.pid, 10)
    producer.join()
    keys = [k for k, _ in records]
    result = reconcile(own_broker.bootstrap_servers, topic, keys, timeout=300)
    assert result.lost(keys) == []
    # Malformed payloads are dead letters, real documents labels; none of either is missing.
    assert all(result.dead[k] >= 1 for k, _ in bad)
    assert all(result.outputs[k] >= 1 for k, _ in good)
    duplicates = result.duplicates()
    record_report("bar_scenario", {"inputs": len(keys), "duplicates": duplicates,
                                   "duplicate_share": round(duplicates / len(keys), 4)})
    assert duplicates <= 0.2 * len(keys)
    assert all(w.alive() for w in group), "a worker exited that was not killed"
    assert [w.terminate() for w in group] == [0, 0, 0]
