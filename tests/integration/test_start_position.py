"""``run --start-from``: where a group starts on a partition without a committed offset, on the real broker.

A new group with ``latest`` labels only what arrives after its partitions were assigned (``/readyz`` says when);
a committed offset always wins over ``--start-from``.
"""

from __future__ import annotations

import json

from tests.support.kafka import create_stream, produce, read_all, reconcile, result_topics, wait_committed


def json_docs(docs: list[str], prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-{i}".encode(), json.dumps({"id": f"{prefix}-{i}", "text": d}).encode())
            for i, d in enumerate(docs)]


def test_a_new_group_starting_from_latest_labels_only_what_arrives_after_it_joined(broker, workers, news_docs,
                                                                                   unique_name) -> None:
    bootstrap = broker.bootstrap_servers
    topic, group = unique_name, f"{unique_name}-g"
    create_stream(bootstrap, topic, partitions=3)
    history, new = json_docs(news_docs[:40], "old"), json_docs(news_docs[40:70], "new")
    produce(bootstrap, topic, history)
    worker = workers.start(bootstrap, topic, group, "--start-from", "latest")
    worker.wait_ready()  # every partition assigned: from here on a record counts as arriving after it joined
    produce(bootstrap, topic, new)
    keys = [key.decode() for key, _ in new]
    outcome = reconcile(bootstrap, topic, keys, timeout=60)
    assert outcome.lost(keys) == [], worker.log()
    assert worker.terminate() == 0, worker.log()

    outputs = read_all(bootstrap, result_topics(topic))
    assert sorted(m.key.decode() for m in outputs) == sorted(keys), worker.log()
    assert worker.events("worker_started")[0]["start_from"] == "latest"


def test_a_committed_offset_wins_over_start_from_latest(broker, workers, news_docs, unique_name) -> None:
    """Records sent while the group's only worker was down are labelled by its successor, whatever --start-from."""
    bootstrap = broker.bootstrap_servers
    topic, group = unique_name, f"{unique_name}-g"
    create_stream(bootstrap, topic, partitions=2)
    first, while_down = json_docs(news_docs[:20], "a"), json_docs(news_docs[20:45], "b")
    produce(bootstrap, topic, first)
    worker = workers.start(bootstrap, topic, group)  # the default: earliest
    assert sum(wait_committed(bootstrap, group, topic, 2, len(first)).values()) == len(first), worker.log()
    assert worker.terminate() == 0, worker.log()

    produce(bootstrap, topic, while_down)
    successor = workers.start(bootstrap, topic, group, "--start-from", "latest")
    assert sum(wait_committed(bootstrap, group, topic, 2, len(first) + len(while_down)).values()) == \
        len(first) + len(while_down), successor.log()
    assert successor.terminate() == 0, successor.log()

    outputs = read_all(bootstrap, result_topics(topic))
    expected = sorted(key.decode() for key, _ in first + while_down)
    assert sorted(m.key.decode() for m in outputs) == expected, successor.log()
