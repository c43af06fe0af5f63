"""The cost of `lstm-worker run --exactly-once`: the same real documents through the worker in both modes.

Each broker in turn (``--broker``, repeatable: Apache Kafka and Tansu by default), the modes interleaved on it
(at-least-once, exactly-once, at-least-once, ...) so that a change in the machine's load hits both. Writes
``bench/results/exactly-once-latest.json`` and prints, per broker, the throughput ratio exactly-once /
at-least-once (the medians of the rounds), and each mode's ratio between the brokers. The reader is
librdkafka with its default ``isolation.level=read_committed``, so an exactly-once label counts when its
transaction commits.

    python -m bench.exactly_once --bundle artifacts/default/bundle --data ../shared/data/20news-bydate.tar.gz
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from pathlib import Path

import click

from bench.provenance import command_line, write_result
from bench.streaming import measure_worker
from core.bundle import load_bundle
from devtools.local_broker import BROKER_KINDS, DESCRIPTIONS, KAFKA, TANSU, running_broker
from worker.devbroker import free_port

ROOT = Path(__file__).resolve().parents[1]
MODES = {"at_least_once": (), "exactly_once": ("--exactly-once",)}


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path, exists=True), default=ROOT / "artifacts/default/bundle",
              show_default=True, help="Model bundle to serve.")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--docs", default=3000, show_default=True, help="Documents streamed per run.")
@click.option("--rounds", default=4, show_default=True, help="Runs per mode, interleaved.")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True, help="ONNX Runtime threads.")
@click.option("--latency-seconds", default=5.0, show_default=True,
              help="Length of each half-load latency run (both modes).")
@click.option("--broker", "brokers", type=click.Choice(BROKER_KINDS), multiple=True, default=(KAFKA, TANSU),
              show_default=True, envvar="LSTM_BENCH_BROKER", show_envvar=True,
              help="Local broker(s) to measure on, one after the other (repeatable).")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results/exactly-once-latest.json",
              show_default=True, help="Result file.")
def main(bundle: Path, data: str, docs: int, rounds: int, threads: int, latency_seconds: float,
         brokers: tuple[str, ...], output: Path) -> None:
    """Throughput and latency of the worker at least once and exactly once, on each local broker."""
    from training.data import load_dataset

    loaded = load_bundle(bundle)
    dataset = load_dataset(data, seed=0)
    texts = [dataset.test_texts[i] for i in random.Random(0).sample(range(len(dataset.test_texts)), docs)]
    measured = {kind: measure_on(kind, bundle, texts, rounds, threads, latency_seconds) for kind in brokers}
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command_line("bench.exactly_once"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "bundle": loaded.model_id, "docs": docs, "rounds": rounds, "threads": threads,
        "brokers": {kind: {"broker": DESCRIPTIONS[kind], **result} for kind, result in measured.items()},
    }
    if KAFKA in measured and TANSU in measured:
        report["throughput_ratio_kafka_vs_tansu"] = {
            mode: round(measured[KAFKA]["summary"][mode]["docs_per_s_median"]
                        / measured[TANSU]["summary"][mode]["docs_per_s_median"], 3) for mode in MODES}
    write_result(output, report)
    click.echo(f"\nresults: {output}")
    for kind, result in measured.items():
        click.echo(DESCRIPTIONS[kind])
        for mode, values in result["summary"].items():
            click.echo(f"  {mode:<15} {values['docs_per_s_median']:>8.1f} docs/s (runs: {values['docs_per_s']}), "
                       f"p99 at half load {values['p99_ms_at_half_load']} ms")
        click.echo(f"  throughput ratio exactly-once / at-least-once: "
                   f"{result['throughput_ratio_exactly_once_vs_at_least_once']:.3f}")
    for mode, ratio in report.get("throughput_ratio_kafka_vs_tansu", {}).items():
        click.echo(f"{mode}: Kafka / Tansu throughput {ratio:.3f}")


def measure_on(kind: str, bundle: Path, texts: list[str], rounds: int, threads: int,
               latency_seconds: float) -> dict:
    """Both modes interleaved, ``rounds`` times, on one fresh broker of ``kind``."""
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with running_broker(kind) as broker:
        for round_number in range(rounds):
            for mode, extra in MODES.items():
                click.echo(f"{kind} round {round_number + 1}/{rounds}: {mode} ...")
                result = measure_worker(broker.bootstrap_servers, bundle, texts, metrics_port=free_port(),
                                        threads=threads, provider="cpu", latency_seconds=latency_seconds,
                                        extra=extra)
                runs[mode].append(result)
                click.echo(f"  {result['docs_per_s']} docs/s, p99 at half load {result['latency']['p99_ms']} ms")
    summary = {mode: {"docs_per_s_median": statistics.median(r["docs_per_s"] for r in results),
                      "docs_per_s": [r["docs_per_s"] for r in results],
                      "p99_ms_at_half_load": [r["latency"]["p99_ms"] for r in results],
                      "p50_ms_at_half_load": [r["latency"]["p50_ms"] for r in results]}
               for mode, results in runs.items()}
    ratio = summary["exactly_once"]["docs_per_s_median"] / summary["at_least_once"]["docs_per_s_median"]
    return {"summary": summary, "throughput_ratio_exactly_once_vs_at_least_once": round(ratio, 3), "runs": runs}


if __name__ == "__main__":
    main()
