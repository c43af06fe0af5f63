"""`make bench`: one run, one machine, every way of scoring the same real documents, side by side.

Writes ``bench/results/<timestamp>.json`` and ``bench/results/latest.json`` and
prints the ratios the performance targets are stated in. Ratios measured in
one run are what count; absolute numbers depend on the machine and its load.

The worker is measured through each local broker of ``--broker`` (Apache Kafka
and Tansu by default), the rounds interleaved so every broker sees the same
load; the targets are checked on the first, and ``kafka_vs_tansu`` holds the
ratios between the two when both ran.
"""

from __future__ import annotations

import os
import platform
import random
import time
from contextlib import ExitStack
from pathlib import Path

import click

from bench.frontier import describe
from bench.hardware import lstm_flops_per_token, matmul_peak_gflops
from bench.offline import ort_batched, ort_per_message, torch_per_message
from bench.provenance import command_line, write_result
from bench.streaming import measure_worker
from core.bundle import load_bundle
from core.runtime import usable_cpus
from devtools.local_broker import BROKER_KINDS, DESCRIPTIONS, KAFKA, TANSU, running_broker
from training.data import load_dataset
from worker.devbroker import free_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLES = [ROOT / "artifacts/default/bundle", ROOT / "artifacts/demo/bundle"]
TARGETS = {
    "worker_vs_classify": 0.85,
    "batched_vs_torch_per_message": 5.0,
    "bucketed_vs_unbucketed": 1.5,
    "p99_ms_at_half_load": 300.0,
    "worker_rss_mb": 300.0,
}


def default_bundle() -> Path | None:
    return next((b for b in DEFAULT_BUNDLES if (b / "manifest.json").exists()), None)


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=default_bundle,
              show_default="artifacts/default/bundle", help="Model bundle to measure.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="checkpoint.pt for the PyTorch per-message baseline (default: the bundle's source checkpoint).")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--docs", default=3000, show_default=True, help="Documents for the batched and streaming runs.")
@click.option("--per-message-docs", default=300, show_default=True,
              help="Documents for the (slow) one-at-a-time runs; their rate is per document anyway.")
@click.option("--threads", default=0, show_default=True,
              help="Inference threads, same for all (0 = the worker's default: one per usable CPU).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--latency-seconds", default=20.0, show_default=True, help="Length of each offered-load latency run.")
@click.option("--curve-load", "curve_loads", type=float, multiple=True, default=(0.25, 0.75, 0.9), show_default=True,
              help="More offered loads for the latency curve, as shares of the worker's throughput (repeat; the "
                   "half load is always measured, and is the one the latency target is stated at).")
@click.option("--rounds", default=3, show_default=True,
              help="Alternating classify/worker throughput rounds; medians are compared.")
@click.option("--broker", "brokers", type=click.Choice(BROKER_KINDS), multiple=True, default=(KAFKA, TANSU),
              show_default=True, envvar="LSTM_BENCH_BROKER", show_envvar=True,
              help="Local broker(s) to measure the worker through, interleaved (repeatable; the targets are "
                   "checked on the first).")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results", show_default=True)
def main(bundle: Path | None, checkpoint: Path | None, data: str, docs: int, per_message_docs: int, threads: int,
         provider: str, latency_seconds: float, curve_loads: tuple[float, ...], rounds: int,
         brokers: tuple[str, ...], output: Path) -> None:
    """Measure per-message PyTorch, per-message ONNX Runtime, batched classify and the worker via Kafka."""
    if bundle is None:
        raise click.UsageError("no bundle found: run `make demo` or `lstm-export`, or pass --bundle")
    loaded = load_bundle(bundle)
    checkpoint = checkpoint or Path(loaded.manifest.get("source", {}).get("checkpoint", ""))
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoint.pt"
    threads = threads or usable_cpus()
    dataset = load_dataset(data, seed=0)
    rng = random.Random(0)
    texts = [dataset.test_texts[i] for i in rng.sample(range(len(dataset.test_texts)), docs)]
    few = texts[:per_message_docs]
    # The load average says how much else ran on the machine: absolute figures only compare at similar loads.
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "processor": platform.processor(), "load_avg_at_start": os.getloadavg()},
                     "bundle": loaded.model_id, "model": describe(loaded.manifest), "docs": docs, "threads": threads,
                     "provider": provider}
    click.echo("measuring FP32 matmul peak ...")
    results["matmul_peak_gflops"] = round(matmul_peak_gflops(), 1)
    if checkpoint.is_file():
        click.echo("per-message PyTorch ...")
        results["torch_per_message"] = torch_per_message(str(checkpoint), few, threads)
    else:
        click.echo(f"no PyTorch checkpoint at {checkpoint}: skipping per-message PyTorch (pass --checkpoint)")
    click.echo("per-message ONNX Runtime ...")
    results["ort_per_message"] = ort_per_message(loaded, few, threads)
    click.echo("batched classify, bucketed and not ...")
    results["classify_unbucketed"] = ort_batched(loaded, texts, threads, provider, bucketed=False)
    # Three seconds of streaming is a short, noisy sample on a shared machine: alternate classify and the
    # worker for --rounds rounds (so both see the same load) and compare medians.
    brokers = tuple(dict.fromkeys(brokers))  # each once, in the order given
    with ExitStack() as stack:
        started = {kind: stack.enter_context(running_broker(kind)) for kind in brokers}
        bootstrap = {kind: broker.bootstrap_servers for kind, broker in started.items()}
        classify_rounds: list[dict] = []
        worker_rounds: dict[str, list[dict]] = {kind: [] for kind in brokers}
        for round_no in range(rounds):
            click.echo(f"round {round_no + 1}/{rounds}: batched classify, then the worker through "
                       f"{', '.join(brokers)} ...")
            classify_rounds.append(ort_batched(loaded, texts, threads, provider, bucketed=True))
            for kind in brokers:
                worker_rounds[kind].append(measure_worker(bootstrap[kind], bundle, texts, metrics_port=free_port(),
                                                          threads=threads, provider=provider, latency_seconds=0))
        results["classify_bucketed"] = median_round(classify_rounds)
        results["classify_rounds"] = [r["docs_per_s"] for r in classify_rounds]
        config = loaded.manifest["model"].get("config")
        if config:
            tokens = sum(len(loaded.vocab.token_ids(t, loaded.preprocessing.max_len)) for t in texts)
            seconds = results["classify_bucketed"]["seconds"]
            results["lstm_gflops_achieved"] = round(tokens * lstm_flops_per_token(config) / seconds / 1e9, 2)
        results["brokers"] = {}
        for kind in brokers:
            worker_max = median_round(worker_rounds[kind])["docs_per_s"]
            click.echo(f"{kind}: latency at half load ({worker_max / 2:.0f} docs/s), then at "
                       f"{', '.join(map(str, curve_loads))} of the worker's throughput ...")
            worker = measure_worker(bootstrap[kind], bundle, texts, metrics_port=free_port(), threads=threads,
                                    provider=provider, latency_seconds=latency_seconds, latency_rate=worker_max / 2,
                                    curve_rates=[share * worker_max for share in curve_loads])
            # That run's own throughput is one more sample; the median of the alternating rounds is what counts.
            worker["fourth_round_docs_per_s"] = worker["docs_per_s"]
            worker["docs_per_s"] = worker_max
            results["brokers"][kind] = {"broker": DESCRIPTIONS[kind], "worker": worker,
                                        "worker_throughput_rounds": [r["docs_per_s"] for r in worker_rounds[kind]]}
    primary = results["brokers"][brokers[0]]
    results["worker_broker"] = brokers[0]
    results["worker"] = primary["worker"]
    results["worker_throughput_rounds"] = primary["worker_throughput_rounds"]
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    results["ratios"] = ratios(results)
    if KAFKA in results["brokers"] and TANSU in results["brokers"]:
        results["kafka_vs_tansu"] = between_brokers(results["brokers"][KAFKA]["worker"],
                                                    results["brokers"][TANSU]["worker"])
    write(results, output)


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["docs_per_s"])[len(rounds) // 2]


def ratios(r: dict) -> dict:
    classify = r["classify_bucketed"]["docs_per_s"]
    out = {
        "worker_vs_classify": round(r["worker"]["docs_per_s"] / classify, 3),
        "bucketed_vs_unbucketed": round(classify / r["classify_unbucketed"]["docs_per_s"], 2),
        "batched_vs_ort_per_message": round(classify / r["ort_per_message"]["docs_per_s"], 2),
        "p99_ms_at_half_load": r["worker"]["latency"]["p99_ms"],
        "worker_rss_mb": r["worker"]["rss_mb"],
    }
    if "torch_per_message" in r:
        out["batched_vs_torch_per_message"] = round(classify / r["torch_per_message"]["docs_per_s"], 2)
    if "lstm_gflops_achieved" in r:
        out["lstm_share_of_matmul_peak"] = round(r["lstm_gflops_achieved"] / r["matmul_peak_gflops"], 3)
    return out


def between_brokers(kafka: dict, tansu: dict) -> dict:
    """The worker on Apache Kafka over the worker on Tansu: above 1 means more (throughput) or slower (times)."""
    return {
        "docs_per_s": round(kafka["docs_per_s"] / tansu["docs_per_s"], 3),
        "p50_ms_at_half_load": round(kafka["latency"]["p50_ms"] / tansu["latency"]["p50_ms"], 3),
        "p99_ms_at_half_load": round(kafka["latency"]["p99_ms"] / tansu["latency"]["p99_ms"], 3),
        "startup_to_ready_s": round(kafka["startup_to_ready_s"] / tansu["startup_to_ready_s"], 3),
        "worker_rss_mb": round(kafka["rss_mb"] / tansu["rss_mb"], 3),
    }


def write(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = {"command": command_line("bench.run"), **results}
    write_result(output / f"{stamp}.json", results)
    write_result(output / "latest.json", results)
    click.echo(f"\nresults: {output / (stamp + '.json')}\n")
    click.echo(f"{'measure':<34}{'value':>12}{'target':>10}  ok")
    for name, value in results["ratios"].items():
        target = TARGETS.get(name)
        lower_is_better = name in ("p99_ms_at_half_load", "worker_rss_mb")
        ok = "" if target is None else ("yes" if (value <= target if lower_is_better else value >= target) else "NO")
        click.echo(f"{name:<34}{value:>12}{'' if target is None else target:>10}  {ok}")
    rates = {k: v["docs_per_s"] for k, v in results.items() if isinstance(v, dict) and "docs" in v}
    click.echo("\n" + "  ".join(f"{k}: {v} docs/s" for k, v in rates.items()))
    for measured_on in results["brokers"].values():
        click.echo(f"{measured_on['broker']}: {measured_on['worker']['docs_per_s']} docs/s "
                   f"(rounds: {measured_on['worker_throughput_rounds']})")
        for point in measured_on["worker"].get("latency_curve", []):
            measured = point.get("error") or f"p50 {point['p50_ms']} / p95 {point['p95_ms']} / p99 {point['p99_ms']} ms"
            click.echo(f"  offered {point['offered_docs_per_s']:>8} docs/s: {measured}")
    for name, ratio in results.get("kafka_vs_tansu", {}).items():
        click.echo(f"Kafka / Tansu {name}: {ratio}")


if __name__ == "__main__":
    main()
