"""Two --exactly-once workers of one group on one host, both with the DEFAULT transactional id.

Both must keep running and share the work (issue 15). An id made of group and host name alone made the
second replica's InitProducerId fence the first, which exited 1 with ProducerFencedError within seconds;
the default now adds a per-host slot.
"""

from __future__ import annotations

import time

from tests.support.data import json_records
from tests.support.kafka import create_stream, produce, reconcile
from tests.support.workers import EXACTLY_ONCE, in_background, mode_flags


def test_two_exactly_once_replicas_with_the_default_transactional_id_both_keep_running(broker, real_texts,
                                                                                      workers, unique_name) -> None:
    topic, group, bootstrap = unique_name, f"g-{unique_name}", broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=4)
    first, second = (workers.start(bootstrap, topic, group, *mode_flags(EXACTLY_ONCE)) for _ in range(2))
    for worker in (first, second):
        worker.wait_healthy()
    records = json_records(real_texts[:800])
    producer = in_background(produce, bootstrap, topic, records, 0.01)
    time.sleep(5)
    producer.join()
    keys = [k for k, _ in records]
    result = reconcile(bootstrap, topic, keys, timeout=180)
    exited = {name: w.process.poll() for name, w in (("first", first), ("second", second)) if not w.alive()}
    assert exited == {}, f"replicas exited (exit codes): {exited}\n{first.log()}\n{second.log()}"
    assert result.lost(keys) == []
    assert [first.terminate(), second.terminate()] == [0, 0]
