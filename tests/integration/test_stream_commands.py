"""The streaming loop in commands: topics create, send, run, tail on the real broker; their one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.kafka import produce, read_until
from tests.support.ports import free_port, port_accepts
from tests.support.workers import WORKER, WorkerPool
from worker.devbroker import DevBroker


def lstm_worker(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([WORKER, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def only_line(result: subprocess.CompletedProcess) -> str:
    """The single line a refused command prints: no traceback, no client log lines."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,text\n")
        for key, text in rows:
            handle.write(f'{key},"{text}"\n')
    return path


def test_topics_create_makes_the_stream_and_its_result_topics(broker: DevBroker, unique_name: str) -> None:
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    first = lstm_worker("topics", "create", unique_name, "--partitions", "2", *bootstrap)
    assert first.returncode == 0, first.stderr
    assert f"created {unique_name}, {unique_name}.labels, {unique_name}.dlq (2 partitions each)" in first.stderr
    again = lstm_worker("topics", "create", unique_name, "--no-results", *bootstrap)
    assert again.returncode == 0 and f"already there: {unique_name}" in again.stderr


def test_send_a_csv_and_tail_it_back(broker: DevBroker, unique_name: str, tmp_path: Path) -> None:
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    assert lstm_worker("topics", "create", unique_name, "--no-results", *bootstrap).returncode == 0
    rows = [(f"m{i}", f"message number {i}, with a comma") for i in range(20)]
    sent = lstm_worker("send", str(write_csv(tmp_path / "in.csv", rows)), "--topic", unique_name, *bootstrap)
    assert sent.returncode == 0, sent.stderr
    assert f"sent 20 records to {unique_name}" in sent.stderr

    records = read_until(broker.bootstrap_servers, [unique_name], 20)
    assert {(r.key.decode(), json.loads(r.value)["text"]) for r in records} == set(rows)

    tailed = lstm_worker("tail", "--topic", unique_name, "--from-beginning", "--max-messages", "20",
                         "--fields", "id,text", *bootstrap)
    assert tailed.returncode == 0, tailed.stderr
    assert {tuple(line.split("\t")) for line in tailed.stdout.splitlines()} == set(rows)


def test_send_from_stdin_sends_each_line_as_it_is(broker: DevBroker, unique_name: str) -> None:
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    assert lstm_worker("topics", "create", unique_name, "--no-results", *bootstrap).returncode == 0
    lines = ['{"id": "j1", "text": "a JSON line"}', "a plain line", '{"text": ']
    sent = lstm_worker("send", "--topic", unique_name, *bootstrap, stdin="\n".join(lines) + "\n\n")
    assert sent.returncode == 0, sent.stderr
    records = read_until(broker.bootstrap_servers, [unique_name], 3)
    assert sorted(r.value.decode() for r in records) == sorted(lines)
    assert {r.value.decode(): r.key for r in records}[lines[0]] == b"j1"


def test_tail_waits_for_new_records_and_stops_after_the_timeout(broker: DevBroker, unique_name: str) -> None:
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    assert lstm_worker("topics", "create", unique_name, "--no-results", *bootstrap).returncode == 0
    produce(broker.bootstrap_servers, unique_name, [(None, b"old")])
    tail = subprocess.Popen([WORKER, "tail", "--topic", unique_name, "--timeout", "3", *bootstrap],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # tail has assigned its partitions at their end by then
        produce(broker.bootstrap_servers, unique_name, [(None, b"new")])
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    assert out.splitlines() == ["new"]


def test_missing_topic_is_one_line_naming_the_command_that_creates_it(broker: DevBroker, unique_name: str,
                                                                      tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "in.csv", [("a", "text")])
    for command in (["send", str(csv)], ["tail"]):
        result = lstm_worker(*command, "--topic", unique_name, "--bootstrap-servers", broker.bootstrap_servers)
        assert result.returncode == 2
        assert only_line(result) == (f"Error: topic {unique_name!r} does not exist: create it with "
                                     f"`lstm-worker topics create {unique_name}` or fix --topic")


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "in.csv", [("a", "text")])
    address = f"127.0.0.1:{free_port()}"
    for command in (["send", str(csv), "--topic", "t"], ["tail", "--topic", "t"], ["topics", "create", "t"]):
        result = lstm_worker(*command, "--bootstrap-servers", address)
        assert result.returncode == 2
        assert only_line(result).startswith(f"Error: cannot reach Kafka at {address}")


def test_send_refuses_a_missing_file_before_connecting(tmp_path: Path) -> None:
    result = lstm_worker("send", str(tmp_path / "absent.csv"), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert only_line(result) == f"Error: {tmp_path / 'absent.csv'}: no such file"


def test_a_csv_labelled_on_a_stream_with_no_code(broker: DevBroker, workers: WorkerPool, unique_name: str,
                                                 tmp_path: Path, news_docs: list[str]) -> None:
    """The README's loop: create the topics, send a CSV, run the worker, tail the labels."""
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    assert lstm_worker("topics", "create", unique_name, *bootstrap).returncode == 0
    rows = [(f"doc-{i}", " ".join(text.split())[:300].replace('"', "'")) for i, text in enumerate(news_docs[:30])]
    worker = workers.start(broker.bootstrap_servers, unique_name, unique_name)
    worker.wait_healthy()
    sent = lstm_worker("send", str(write_csv(tmp_path / "posts.csv", rows)), "--topic", unique_name, *bootstrap)
    assert sent.returncode == 0, sent.stderr
    tailed = lstm_worker("tail", "--topic", f"{unique_name}.labels", "--from-beginning", "--max-messages", "30",
                         "--timeout", "60", "--fields", "id,label,model", *bootstrap)
    assert tailed.returncode == 0, tailed.stderr
    lines = [line.split("\t") for line in tailed.stdout.splitlines()]
    assert sorted(key for key, _, _ in lines) == sorted(key for key, _ in rows)
    assert all(label and "@" in model for _, label, model in lines)


def test_tail_into_a_pipe_closed_early_ends_quietly(broker: DevBroker, unique_name: str) -> None:
    """`lstm-worker tail ... | head -n 1`: no traceback when head has what it wanted."""
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]
    assert lstm_worker("topics", "create", unique_name, "--no-results", *bootstrap).returncode == 0
    produce(broker.bootstrap_servers, unique_name, [(None, b"x" * 1000) for _ in range(500)])
    result = subprocess.run(f"{WORKER} tail --topic {unique_name} --from-beginning --timeout 5 "
                            f"--bootstrap-servers {broker.bootstrap_servers} | head -n 1",
                            shell=True, capture_output=True, text=True, timeout=60)
    assert result.stdout == "x" * 1000 + "\n"
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr


def test_the_broker_stops_its_tansu_on_sighup() -> None:
    port = free_port()
    process = subprocess.Popen([WORKER, "broker", "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert any("Ctrl-C to stop" in line for line in process.stderr)  # it is up (Tansu's lines may come first)
        process.send_signal(signal.SIGHUP)
        assert process.wait(30) == 0
        assert not port_accepts("127.0.0.1", port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_broker_creates_topics_and_its_tansu_dies_with_it_even_on_sigkill() -> None:
    port = free_port()
    process = subprocess.Popen([WORKER, "broker", "--port", str(port), "--topics", "a,b", "--no-results"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:  # Tansu's own lines may come first
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert "created a, b (3 partitions each)\n" in lines, lines
        children = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        assert len(children) == 1
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 10
        while port_accepts("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_accepts("127.0.0.1", port)
        assert not Path(f"/proc/{children[0]}").exists() or "Z" in Path(f"/proc/{children[0]}/stat").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
