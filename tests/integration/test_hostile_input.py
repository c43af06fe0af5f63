"""Hostile input never stops the worker, in either delivery mode (issue 15).

The same stream (real documents mixed with hostile-but-valid JSON and broken payloads, written with
librdkafka) goes through one worker per mode, both at once. Per mode: the worker never exits, every
input lands exactly once in the output or the dead-letter topic, every label is strict JSON, the
dead letters keep the contract. Across modes: the same input gets the same outcome.
Before the worker's rewrite it exited 1 on the lone-surrogate id (a poison pill: every restart died on
it again) and echoed NaN/Infinity ids into labels that strict JSON parsers reject.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.data import LABEL, REASONS, Hostile, hostile_payloads, json_records, strict_json
from tests.support.kafka import Message, create_stream, produce, read_all, read_until
from tests.support.workers import MODES, WorkerPool, mode_flags


@dataclass
class HostileRun:
    mode: str
    topic: str
    inputs: list[Message]  # as read back from the input topic
    results: list[Message]  # labels and dead letters
    alive_at_end: bool
    exit_code: int | None
    log: str

    def input_at(self, source: tuple[int, int]) -> Message:
        return next(m for m in self.inputs if (m.partition, m.offset) == source)


def identity(message: Message) -> str:
    """Names an input independently of the topic and partition it landed in."""
    if message.key is not None:
        return message.key.decode("utf-8", "backslashreplace")
    return "no-key:" + hashlib.sha256(message.value or b"").hexdigest()[:16]


def outcome(result: Message) -> str:
    return result.header("error.type").decode() if result.is_dead_letter else LABEL


@pytest.fixture(scope="module")
def hostile_inputs(news_docs: list[str]) -> list[Hostile]:
    return hostile_payloads(news_docs[0][:3000])


@pytest.fixture(scope="module")
def hostile_runs(broker, tiny_bundle_dir: Path, news_docs: list[str], hostile_inputs: list[Hostile],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileRun]:
    """Both modes on the same inputs, side by side; whatever happened is recorded, nothing asserted here."""
    bootstrap = broker.bootstrap_servers
    normal = [(k.encode(), v) for k, v in json_records(news_docs[1:41], "normal")]
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, hostile in enumerate(hostile_inputs):  # hostile records spread through the normal ones
        records += [*normal[2 * i:2 * i + 2], (hostile.key, hostile.value)]
    records += normal[2 * len(hostile_inputs):]
    pool = WorkerPool(tiny_bundle_dir, tmp_path_factory.mktemp("hostile"))
    started = {}
    try:
        for mode in MODES:
            topic = f"hostile-{mode}-{time.time_ns()}"
            create_stream(bootstrap, topic, partitions=2)
            produce(bootstrap, topic, records)
            started[mode] = (topic, pool.start(bootstrap, topic, f"{topic}-g", *mode_flags(mode)))
        runs = {}
        for mode, (topic, worker) in started.items():
            results = f"{topic}.labels", f"{topic}.dlq"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and worker.alive():
                if len(read_until(bootstrap, results, expected=len(records), timeout=5)) >= len(records):
                    break
            time.sleep(1)  # anything late (a duplicate) would show up now
            alive = worker.alive()
            code = worker.terminate() if alive else worker.wait(5)
            runs[mode] = HostileRun(mode, topic, read_all(bootstrap, [topic]), read_all(bootstrap, results),
                                    alive, code, worker.log(20_000))
        return runs
    finally:
        pool.close()


def test_hostile_input_never_stops_the_worker(hostile_runs, mode) -> None:
    run = hostile_runs[mode]
    assert run.alive_at_end, f"the worker exited with {run.exit_code} on hostile input:\n{run.log}"
    assert run.exit_code == 0, run.log


def test_every_hostile_input_lands_exactly_once(hostile_runs, mode) -> None:
    run = hostile_runs[mode]
    counts = Counter(m.source() for m in run.results)
    missing = [identity(m) for m in run.inputs if counts[(m.partition, m.offset)] == 0]
    twice = [identity(run.input_at(s)) for s, c in counts.items() if c > 1]
    assert (missing, twice) == ([], []), run.log
    assert len(run.inputs) == len(run.results)


def test_every_label_is_strict_json_with_an_echoable_id(hostile_runs, hostile_inputs, mode) -> None:
    run = hostile_runs[mode]
    fallback = {h.key or h.value: h for h in hostile_inputs if h.fallback_id}
    bad = []
    for label in (m for m in run.results if not m.is_dead_letter):
        try:
            body = strict_json(label.value)
        except ValueError as exc:  # UnicodeError and JSONDecodeError included
            bad.append((label.key, f"{type(exc).__name__}: {exc}", label.value[:120]))
            continue
        assert set(body) >= {"id", "label", "score", "top_k", "model", "source"}, body
        source = body["source"]
        assert source["topic"] == run.topic, body
        original = run.input_at((source["partition"], source["offset"]))
        hostile = fallback.get(original.key or original.value)
        if hostile is not None:  # the JSON id cannot be echoed: the key, else topic:partition:offset
            expected = (original.key.decode() if original.key is not None
                        else f"{run.topic}:{source['partition']}:{source['offset']}")
            assert body["id"] == expected, (identity(original), body["id"])
    assert bad == [], f"labels that are not strict JSON: {bad}"


def test_hostile_inputs_get_the_outcome_the_contract_gives(hostile_runs, hostile_inputs, mode) -> None:
    run = hostile_runs[mode]
    by_input = {(m.partition, m.offset): m for m in run.inputs}
    got = {}
    for result in run.results:
        original = by_input[result.source()]
        got[identity(original)] = outcome(result)
        if result.is_dead_letter:  # the original record, plus why and where from
            assert result.header("error.type").decode() in REASONS
            assert result.header("error.message")
            assert result.header("source.topic") == run.topic.encode()
            assert (result.key, result.value) == (original.key, original.value)
    expected = {identity(Message("", 0, 0, h.key, h.value, [])): h.expect for h in hostile_inputs}
    wrong = {name: (got.get(name), want) for name, want in expected.items()
             if want is not None and got.get(name) != want}
    assert wrong == {}, f"(got, contract) per input: {wrong}"
    assert all(v == LABEL for k, v in got.items() if k.startswith("normal-")), got


def test_both_modes_treat_each_hostile_input_alike(hostile_runs) -> None:
    outcomes = {}
    for mode, run in hostile_runs.items():
        by_input = {(m.partition, m.offset): m for m in run.inputs}
        outcomes[mode] = {identity(by_input[r.source()]): outcome(r) for r in run.results}
    first, second = (outcomes[m] for m in MODES)
    differ = {k: (first.get(k), second.get(k)) for k in first.keys() | second.keys() if first.get(k) != second.get(k)}
    assert differ == {}, f"outcome per input ({MODES[0]}, {MODES[1]}) where they differ: {differ}"


def test_hostile_payloads_are_what_they_claim() -> None:
    """The fixtures themselves: valid JSON where meant, a real lone surrogate, a real BOM."""
    payloads = {h.key: h.value for h in hostile_payloads("some text")}
    assert json.loads(payloads[b"h-surrogate-id"])["id"] == "\ud800"
    assert json.loads(payloads[b"h-nan-id"])["id"] != json.loads(payloads[b"h-nan-id"])["id"]  # NaN
    assert json.loads(payloads[b"h-huge-number-id"])["id"] == float("inf")
    assert payloads[b"h-bom"].startswith(b"\xef\xbb\xbf{")
    assert len(json.loads(payloads[b"h-100kb-id"])["id"]) == 100_000
    assert payloads[b"h-tombstone"] is None
    with pytest.raises(ValueError):
        strict_json(b'{"id": NaN}')
    with pytest.raises(UnicodeError):
        strict_json(b'{"id": "\\ud800"}')
