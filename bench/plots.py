"""Pictures of measured results for the docs: the accuracy/speed frontier, and latency against offered load.

Drawn from the JSON the benchmarks wrote (nothing is measured here)::

    python -m bench.plots                      # docs/img/frontier.png and docs/img/latency.png
    python -m bench.frontier --plot out.png    # the frontier, from bench/results/frontier-latest.json

The default model is marked by comparing each bundle's shape with ``lstm-train``'s
defaults, so the label stays true when the defaults change.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "img"
LATENCY_TARGET_MS = 300.0  # bench.run's target for p99 at half load


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def model_label(row: dict) -> str:
    """'3 x BiLSTM 96', plus what differs from the default shape (vectors, tokens, linear branch)."""
    label = f"{row['members']} x BiLSTM {row['hidden_size']}"
    defaults = TrainConfig(data="", output="")
    if row["embed_dim"] != defaults.embed_dim or row["max_len"] != defaults.max_len:
        label += f", {row['embed_dim']}-d, {row['max_len']} tokens"
    if row.get("bow_weight"):
        label += " + linear branch"
    return label


def is_default(row: dict) -> bool:
    defaults = TrainConfig(data="", output="")
    return (row["members"], row["hidden_size"], row["embed_dim"], row["max_len"], row.get("bow_weight") or 0.0) == (
        defaults.members, defaults.hidden_size, defaults.embed_dim, defaults.max_len, defaults.bow_weight)


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both speed and accuracy, fastest first."""
    best: list[dict] = []
    for row in sorted(rows, key=lambda r: (-r["docs_per_s"], -r["test_accuracy"])):
        if not best or row["test_accuracy"] > best[-1]["test_accuracy"]:
            best.append(row)
    return best


def draw_frontier(result: dict, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    rows = [r for r in result["rows"] if r.get("test_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    front = pareto(rows)
    ax.plot([r["docs_per_s"] for r in front], [r["test_accuracy"] for r in front], color="0.75", zorder=1,
            label="frontier: nothing is both faster and more accurate")
    for row in rows:
        default = is_default(row)
        ax.scatter(row["docs_per_s"], row["test_accuracy"], s=60 if default else 30, zorder=2,
                   color="tab:red" if default else "tab:blue")
        ax.annotate(model_label(row) + (" (default)" if default else ""), (row["docs_per_s"], row["test_accuracy"]),
                    textcoords="offset points", xytext=(6, -3), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"lstm-worker classify, documents/s ({result['threads']} threads, log scale)")
    ax.set_ylabel("test accuracy, 20 Newsgroups")
    ax.set_title(f"Accuracy against speed ({result['docs']} test documents, measured {result['measured_at'][:10]})",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_latency(result: dict, path: Path) -> None:
    """p50/p95/p99 against offered load; runs written before bench.run measured a curve give one point."""
    plt = _pyplot()
    worker = result["worker"]
    points = [p for p in worker.get("latency_curve") or [worker["latency"]] if "error" not in p]
    failed = [p for p in worker.get("latency_curve", []) if "error" in p]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    offered = [p["offered_docs_per_s"] for p in points]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        ax.plot(offered, [p[key] for p in points], style, label=key.removesuffix("_ms"))
    ax.axhline(LATENCY_TARGET_MS, color="0.6", linestyle="--", linewidth=1, label="p99 target at half load")
    ax.axvline(worker["docs_per_s"], color="tab:red", linestyle=":", linewidth=1,
               label=f"worker throughput, input preloaded ({worker['docs_per_s']:.0f} docs/s)")
    for point in failed:
        ax.axvline(point["offered_docs_per_s"], color="black", linewidth=0.5)
        ax.annotate("outputs missing", (point["offered_docs_per_s"], LATENCY_TARGET_MS), fontsize=7, rotation=90)
    ax.set_xlim(0, worker["docs_per_s"] * 1.1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("offered load, documents/s (record timestamp to the label's timestamp)")
    ax.set_ylabel("latency, ms")
    machine = result["machine"]
    load = f", load average {machine['load_avg_at_start'][0]:.1f}" if "load_avg_at_start" in machine else ""
    ax.set_title(f"lstm-worker run, {result['bundle']}, {result['threads']} threads, {machine['cpus']} CPUs "
                 f"shared with the broker and the load{load}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@click.command()
@click.option("--results", type=click.Path(exists=True, file_okay=False, path_type=Path), default=RESULTS,
              show_default=True, help="Folder of benchmark JSON (frontier-latest.json, latest.json).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=IMAGES, show_default=True,
              help="Folder for frontier.png and latency.png.")
def main(results: Path, output: Path) -> None:
    """Draw the frontier (python -m bench.frontier) and the latency curve (make bench) from their latest JSON."""
    output.mkdir(parents=True, exist_ok=True)
    draw_frontier(json.loads((results / "frontier-latest.json").read_text()), output / "frontier.png")
    draw_latency(json.loads((results / "latest.json").read_text()), output / "latency.png")
    click.echo(f"wrote {output / 'frontier.png'} and {output / 'latency.png'}")


if __name__ == "__main__":
    main()
