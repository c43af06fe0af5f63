"""``lstm-worker replay`` refuses what it cannot do in one line, exit 2, before anything is read or written."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.kafka import create_topics, read_all
from tests.support.workers import WORKER


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([WORKER, "replay", "--log-format", "json", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("extra, says", [
    (("--from-time", "2026-12-07T09:30:00"), "--from-time: '2026-12-07T09:30:00' has no UTC offset"),
    (("--from-time", "yesterday"), "is not an ISO 8601 time"),
    (("--from-offsets", "0:10,0:20"), "a partition is named twice"),
    (("--from-offsets", "0-10"), "'0-10' is not PARTITION:OFFSET"),
    (("--from-time", "2026-12-07T09:30:00Z", "--from-offsets", "0:1"), "not both"),
    (("--model-version", "2"), "--model-version: needs --model to name a model store"),
])
def test_bad_options_are_one_line_and_exit_2(tiny_bundle_dir, extra, says) -> None:
    result = replay("--topic", "in", "--job", "j", "--output-topic", "out", "--model", str(tiny_bundle_dir),
                    "--bootstrap-servers", "127.0.0.1:1", *extra)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def test_a_missing_topic_or_version_is_one_line_and_writes_nothing(broker, tiny_bundle_dir, two_version_store,
                                                                   unique_name) -> None:
    bootstrap = broker.bootstrap_servers
    output = f"{unique_name}.replayed"
    create_topics(bootstrap, [output], partitions=1)
    missing = replay("--topic", f"{unique_name}-absent", "--job", "j", "--output-topic", output, "--model",
                     str(tiny_bundle_dir), "--bootstrap-servers", bootstrap)
    assert missing.returncode == 2, missing.stderr
    assert f"input topic '{unique_name}-absent' does not exist" in missing.stderr.splitlines()[-1]
    no_version = replay("--topic", output, "--job", "j", "--output-topic", f"{output}-2", "--model",
                        str(two_version_store[0]), "--model-version", "7", "--bootstrap-servers", bootstrap)
    assert no_version.returncode == 2, no_version.stderr
    assert "no version '7' in this store" in no_version.stderr.splitlines()[-1]
    assert read_all(bootstrap, [output]) == []
