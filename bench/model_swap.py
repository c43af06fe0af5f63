"""What changing models costs a running worker, side by side in one run: throughput with and without a
shadow model, and latency at half load with and without a hot swap in the middle (time to switch, the
latency it adds, peak memory).

    python -m bench.model_swap --bundle artifacts/demo/bundle --data ../shared/data/20news-bydate.tar.gz

Writes ``bench/results/model-swap-<stamp>.json``. The store holds two copies of ``--bundle`` (versions 1 and
2), so the swap measures the mechanism, not a difference between models.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from bench.provenance import command_line, write_result
from bench.streaming import (
    create_topics,
    measure_worker,
    offered_load_latency,
    output_consumer,
    rss_mb,
    start_worker,
    wait_http,
)
from core.model_store import ModelStore
from training.data import load_dataset
from worker.devbroker import DevBroker, free_port

ROOT = Path(__file__).resolve().parents[1]


def make_store(bundle: Path, root: Path) -> Path:
    store = root / "models"
    store.mkdir()
    for version in ("1", "2"):
        shutil.copytree(bundle, store / version)
    (store / "CURRENT").write_text("1\n")
    return store


def latency_run(bootstrap: str, bundle_or_store: Path, texts: list[str], threads: int, rate: float,
                seconds: float, promote_after_s: float | None) -> dict:
    """Offer ``rate`` docs/s for ``seconds``; with a store, promote version 2 after ``promote_after_s``."""
    topic = f"swap-{time.time_ns() % 10**9}"
    create_topics(bootstrap, [topic, f"{topic}.labels", f"{topic}.dlq"], 3)
    consumer = output_consumer(bootstrap, f"{topic}.labels", 3)
    port = free_port()
    worker = start_worker(bootstrap, topic, bundle_or_store, port, threads, "cpu", ["--model-poll-s", "0.2"])
    promoted: list[float] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
        timer = None
        if promote_after_s is not None:
            timer = threading.Timer(promote_after_s, lambda: (promoted.append(time.time()),
                                                              ModelStore(bundle_or_store).promote("2")))
            timer.start()
        latency = offered_load_latency(bootstrap, topic, consumer, texts, rate=rate, seconds=seconds)
        if timer is not None:
            timer.join()
        memory = rss_mb(worker.pid)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
        consumer.close()
    events = {e["event"]: e for e in map(_json, stderr.splitlines()) if e}
    result = {**latency, "rss_mb": memory["rss_mb"], "peak_rss_mb": memory["peak_rss_mb"]}
    if promote_after_s is not None:
        result.update(swapped="model_swapped" in events,
                      load_beside_s=events.get("model_loaded_beside", {}).get("load_s"),
                      promote_to_swap_s=(_seconds_between(promoted[0], events.get("model_swapped"))
                                         if promoted else None))
    return result


def _json(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _seconds_between(start: float, event: dict | None) -> float | None:
    if not event or "timestamp" not in event:
        return None
    stamp = time.mktime(time.strptime(event["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return round(stamp + float("0." + event["timestamp"][20:26]) - start, 3)


@click.command()
@click.option("--bundle", type=click.Path(exists=True, path_type=Path), required=True, help="Bundle to serve.")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--docs", default=3000, show_default=True, help="Documents per run.")
@click.option("--rounds", default=2, show_default=True, help="Alternating rounds with and without a shadow.")
@click.option("--threads", default=2, show_default=True, help="Inference threads of the worker.")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results", show_default=True)
def main(bundle: Path, data: str, docs: int, rounds: int, threads: int, output: Path) -> None:
    """Swap cost and shadow cost of the worker on one machine."""
    dataset = load_dataset(data, seed=0)
    rng = random.Random(0)
    texts = [dataset.test_texts[i] for i in rng.sample(range(len(dataset.test_texts)), docs)]
    result: dict = {"bundle": str(bundle), "docs": docs, "threads": threads,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    plain, shadowed = [], []
    for round_no in range(rounds):
        for name, extra, into in (("without", (), plain), ("with", ("--shadow-model", str(bundle)), shadowed)):
            click.echo(f"round {round_no + 1}/{rounds}: {name} a shadow ...")
            with DevBroker() as broker:
                into.append(measure_worker(broker.bootstrap_servers, bundle, texts, metrics_port=free_port(),
                                           threads=threads, provider="cpu", latency_seconds=0,
                                           extra=extra)["docs_per_s"])
    result["shadow"] = {"without_docs_per_s": plain, "with_docs_per_s": shadowed,
                        "ratio_of_medians": round(float(np.median(shadowed) / np.median(plain)), 3)}
    rate = float(np.median(plain)) / 2
    click.echo(f"latency at half load ({rate:.0f} docs/s), without and with a swap 4 s in ...")
    with tempfile.TemporaryDirectory() as scratch, DevBroker() as broker:
        result["half_load_without_swap"] = latency_run(broker.bootstrap_servers, bundle, texts, threads, rate,
                                                       seconds=12, promote_after_s=None)
        result["half_load_with_swap"] = latency_run(broker.bootstrap_servers, make_store(bundle, Path(scratch)),
                                                    texts, threads, rate, seconds=12, promote_after_s=4.0)
    result = {"command": command_line("bench.model_swap"), **result}
    path = write_result(output / f"model-swap-{time.strftime('%Y%m%dT%H%M%S')}.json", result, indent=1)
    click.echo(json.dumps(result, indent=1))
    click.echo(f"results: {path}")


if __name__ == "__main__":
    main()
