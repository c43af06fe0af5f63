"""Models change while the stream runs: a promoted version is swapped in, a tampered one refused (issue 16).

A real store (two versions exported by the real ``lstm-export``), a real broker, librdkafka writing and
reading, in both delivery modes: mid-stream version 2 is promoted; every input is answered once, both
versions label something, and per partition the labels go version 1 then version 2, never back. Then a
tampered version 3 is made CURRENT by hand: the worker refuses it, keeps labelling with version 2, stays
ready and loses nothing, and ``lstm-worker promote`` of the same version exits non-zero.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from core.model_store import CURRENT_FILE
from tests.support.data import json_records
from tests.support.kafka import create_stream, produce, read_until
from tests.support.model import run_cli
from tests.support.workers import in_background, mode_flags, wait_until

POLL_FLAGS = ("--model-poll-s", "0.5")


def labels_by_partition(messages) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    for m in messages:
        if not m.is_dead_letter:
            body = json.loads(m.value)
            out.setdefault(body["source"]["partition"], []).append((body["source"]["offset"], body["model"]))
    return {p: sorted(v) for p, v in out.items()}


def test_promote_mid_stream_then_refuse_a_tampered_version(broker, workers, news_docs, unique_name, mode,
                                                          two_version_store: tuple[Path, str], tmp_path: Path) -> None:
    store = tmp_path / "models"
    shutil.copytree(two_version_store[0], store)
    bootstrap = broker.bootstrap_servers
    topic, labels, dlq = create_stream(bootstrap, unique_name, partitions=3)
    worker = workers.start(bootstrap, topic, f"{unique_name}-g", "--model", str(store), *POLL_FLAGS,
                           *mode_flags(mode))
    worker.wait_ready()
    first = json_records(news_docs[:120], prefix="a")
    second = json_records(news_docs[120:240], prefix="b")
    third = json_records(news_docs[240:300], prefix="c")
    producing = in_background(produce, bootstrap, topic, first + second, 0.01)
    read_until(bootstrap, [labels, dlq], 50, timeout=120)  # version 1 is answering
    promoted = run_cli("lstm-worker", "promote", "--store", str(store), "2")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    wait_until(lambda: worker.events("model_swapped"), 60, "the worker to swap to version 2")
    producing.join()
    answered = read_until(bootstrap, [labels, dlq], 240, timeout=180)
    assert len(answered) == 240 and len({m.source() for m in answered}) == 240, "lost or duplicated inputs"
    by_partition = labels_by_partition(answered)
    assert {model for rows in by_partition.values() for _, model in rows} == {"tiny@1", "tiny@2"}
    for rows in by_partition.values():  # per partition: version 1, then version 2, never back
        models = [model for _, model in rows]
        assert models == sorted(models), models

    # A tampered version 3, made CURRENT by hand (not through promote).
    shutil.copytree(store / "2", store / "3")
    (store / "3" / "model.onnx").write_bytes((store / "3" / "model.onnx").read_bytes()[:-1] + b"\0")
    (store / CURRENT_FILE).write_text("3\n")
    wait_until(lambda: worker.events("model_reload_refused"), 60, "the worker to refuse version 3")
    assert worker.status("/readyz") == 200 and worker.alive()
    produce(bootstrap, topic, third)
    answered = read_until(bootstrap, [labels, dlq], 300, timeout=180)
    assert len(answered) == 300 and len({m.source() for m in answered}) == 300
    late = [json.loads(m.value)["model"] for m in answered if not m.is_dead_letter
            and m.key.decode().startswith("c")]
    assert late and set(late) == {"tiny@2"}
    # The drift window started afresh with version 2: it holds exactly the labels version 2 scored.
    by_v2 = sum(1 for m in answered if not m.is_dead_letter and json.loads(m.value)["model"] == "tiny@2")
    window = f'lstm_worker_drift_window_records{{model="tiny@2"}} {float(by_v2)}'
    wait_until(lambda: window in worker.get("/metrics")[1], 30, window)
    _, metrics = worker.get("/metrics")
    assert not [line for line in metrics.splitlines() if line.startswith("lstm_worker_drift_") and "tiny@1" in line]
    assert "lstm_worker_model_reload_failures_total 1.0" in metrics
    assert 'lstm_worker_model_info{' in metrics and 'store_version="2"' in metrics
    refused = run_cli("lstm-worker", "promote", "--store", str(store), "3")
    assert refused.returncode != 0 and "3" in (refused.stdout + refused.stderr)
    assert worker.terminate() == 0
