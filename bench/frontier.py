"""Accuracy against speed for several trained bundles: the frontier the defaults are chosen from.

Each bundle's test metrics come from its manifest (what ``lstm-train`` measured on
the test split); its speed is ``lstm-worker classify``'s engine on the same real
documents, measured round-robin so every bundle sees the same machine load.
Writes ``bench/results/frontier-latest.json``; ``--plot PNG`` also draws it (without ``--bundle``:
draws the existing JSON, measuring nothing).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import click

from bench.offline import ort_batched
from bench.plots import draw_frontier
from bench.provenance import command_line, portable, write_result
from core.bundle import load_bundle
from core.runtime import usable_cpus
from training.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def describe(manifest: dict) -> dict:
    config = manifest["model"].get("config") or {}
    metrics = manifest.get("metrics") or {}
    train = (manifest.get("source") or {}).get("train_config") or {}
    return {
        "embed_dim": config.get("embed_dim"), "hidden_size": config.get("hidden_size"),
        "members": config.get("members", 1), "max_len": manifest["preprocessing"]["max_len"],
        "bow_weight": config.get("bow_weight", 0.0),
        "pooling": config.get("pooling"),
        "epochs": train.get("epochs"),
        "test_accuracy": metrics.get("accuracy"), "test_macro_f1": metrics.get("macro_f1"),
        "test_map": metrics.get("mean_average_precision"), "train_seconds": metrics.get("train_seconds"),
    }


@click.command()
@click.option("--bundle", "bundles", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="A bundle to place on the frontier (repeat). Without any, --plot draws the last measurement.")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--docs", default=3000, show_default=True, help="Documents scored per bundle and round.")
@click.option("--rounds", default=3, show_default=True, help="Round-robin rounds; the best round counts.")
@click.option("--threads", default=0, show_default=True, help="Engine threads (0 = one per usable CPU).")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw accuracy against docs/s into this PNG (docs/img/frontier.png in the docs).")
def main(bundles: tuple[Path, ...], data: str, docs: int, rounds: int, threads: int, output: Path,
         plot: Path | None) -> None:
    """Measure classify throughput of each bundle next to its test accuracy."""
    if not bundles:
        if plot is None:
            raise click.UsageError("give --bundle (repeat) to measure, or --plot PNG to draw the last measurement")
        draw_frontier(json.loads((output / "frontier-latest.json").read_text()), plot)
        click.echo(f"drew {output / 'frontier-latest.json'} into {plot}")
        return
    threads = threads or usable_cpus()
    dataset = load_dataset(data, seed=0)
    texts = random.Random(0).sample(list(dataset.test_texts), docs)
    loaded = [load_bundle(b) for b in bundles]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for path, bundle in zip(bundles, loaded, strict=True):
            rate = ort_batched(bundle, texts, threads, "cpu", bucketed=True)["docs_per_s"]
            best[str(path)] = max(best.get(str(path), 0.0), rate)
    rows = [{"bundle": str(p), "model": b.model_id, **describe(b.manifest), "docs_per_s": best[str(p)]}
            for p, b in zip(bundles, loaded, strict=True)]
    result = {"command": command_line("bench.frontier"), "docs": docs, "threads": threads, "rounds": rounds,
              "rows": rows,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result = portable(result)
    write_result(output / "frontier-latest.json", result)
    fastest = max(r["docs_per_s"] for r in rows)
    click.echo(f"{'bundle':<34}{'embed':>6}{'hidden':>7}{'members':>8}{'pooling':>10}{'bow':>5}{'tokens':>7}"
               f"{'test acc':>9}{'docs/s':>8}{'speed':>7}")
    for r in rows:
        accuracy = r["test_accuracy"] or float("nan")
        click.echo(f"{r['bundle'][-34:]:<34}{r['embed_dim']!s:>6}{r['hidden_size']!s:>7}{r['members']!s:>8}"
                   f"{r['pooling']:>10}{r['bow_weight'] or '-'!s:>5}"
                   f"{r['max_len']!s:>7}{accuracy:>9.4f}{r['docs_per_s']:>8.0f}{r['docs_per_s'] / fastest:>7.2f}")
    if plot is not None:
        draw_frontier(result, plot)


if __name__ == "__main__":
    main()
