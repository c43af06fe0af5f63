"""Pictures of measured results for the docs: the accuracy/speed frontier, and latency against offered load.

Drawn from the JSON the benchmarks wrote (nothing is measured here)::

    python -m bench.plots                      # docs/img/frontier.png and docs/img/latency.png (every make bench run)
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
    """'3 x BiLSTM 96', plus what differs from the default shape (vectors, tokens, pooling, linear branch)."""
    label = f"{row['members']} x BiLSTM {row['hidden_size']}"
    defaults = TrainConfig(data="", output="")
    if row["embed_dim"] != defaults.embed_dim or row["max_len"] != defaults.max_len:
        label += f", {row['embed_dim']}-d, {row['max_len']} tokens"
    if pooling(row) != defaults.pooling:
        label += f", {pooling(row).replace('_', '/')} pooling"
    if row.get("bow_weight"):
        label += " + linear branch"
    return label


def is_default(row: dict) -> bool:
    """The default's shape: its members, sizes and tokens, and a linear branch whenever the default has one
    (its weight is chosen per run on validation, so the weight itself does not identify it)."""
    defaults = TrainConfig(data="", output="")
    return (row["members"], row["hidden_size"], row["embed_dim"], row["max_len"], pooling(row),
            bool(row.get("bow_weight"))) == (defaults.members, defaults.hidden_size, defaults.embed_dim,
                                             defaults.max_len, defaults.pooling, defaults.bow_branch)


def pooling(row: dict) -> str:
    """Rows measured before bench.frontier recorded pooling all pooled by max and mean."""
    return row.get("pooling", "max_mean")


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


def bench_runs(results: Path) -> list[dict]:
    """Every ``make bench`` result in ``results`` (timestamped files, oldest first), with its file name."""
    runs = []
    for path in sorted(results.glob("[0-9]*T[0-9]*.json")):
        run = json.loads(path.read_text())
        if "worker" in run and "ratios" in run:
            runs.append({**run, "file": path.name})
    return runs


def draw_latency(runs: list[dict], path: Path) -> None:
    """Latency against offered load: each run's half-load point, and the newest run's curve when it measured one.

    A run's "half load" is half of what the worker managed in that run, so the points spread along the load
    axis by model and by how busy the machine was; the curve (``make bench --curve-load``) is one worker at
    several loads in a row.
    """
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 4.8))
    def series(run: dict) -> str:  # runs before 2026-12-02 did not record the model's shape
        return run["bundle"] + (f" ({model_label(run['model'])})" if "model" in run else "")

    bundles = sorted({series(run) for run in runs})
    colours = dict(zip(bundles, ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"), strict=False))
    for bundle in bundles:
        points = [run["worker"]["latency"] for run in runs if series(run) == bundle]
        offered = [p["offered_docs_per_s"] for p in points]
        ax.scatter(offered, [p["p99_ms"] for p in points], marker="^", color=colours[bundle],
                   label=f"{bundle}: p99 at half load, one point per run")
        ax.scatter(offered, [p["p50_ms"] for p in points], marker="o", facecolors="none", color=colours[bundle],
                   label=f"{bundle}: p50")
    with_curve = [run for run in runs if run["worker"].get("latency_curve")]
    if with_curve:
        run = with_curve[-1]
        curve = [p for p in run["worker"]["latency_curve"] if "error" not in p]
        for key, style in (("p50_ms", "o-"), ("p99_ms", "^-")):
            ax.plot([p["offered_docs_per_s"] for p in curve], [p[key] for p in curve], style, color="black",
                    linewidth=1, label=f"{run['file']} ({series(run)}): {key.removesuffix('_ms')} by offered load")
    ax.axhline(LATENCY_TARGET_MS, color="0.6", linestyle="--", linewidth=1, label="p99 target at half load")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("offered load, documents/s")
    ax.set_ylabel("latency, record timestamp to label, ms (log)")
    ax.set_title(f"lstm-worker run on {runs[-1]['machine']['cpus']} CPUs shared with the broker and the load "
                 f"({len(runs)} make bench runs)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@click.command()
@click.option("--results", type=click.Path(exists=True, file_okay=False, path_type=Path), default=RESULTS,
              show_default=True, help="Folder of benchmark JSON (frontier-latest.json, make bench's timestamped runs).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=IMAGES, show_default=True,
              help="Folder for frontier.png and latency.png.")
def main(results: Path, output: Path) -> None:
    """Draw the frontier (python -m bench.frontier) and latency against offered load (make bench) from the JSON."""
    output.mkdir(parents=True, exist_ok=True)
    draw_frontier(json.loads((results / "frontier-latest.json").read_text()), output / "frontier.png")
    draw_latency(bench_runs(results), output / "latency.png")
    click.echo(f"wrote {output / 'frontier.png'} and {output / 'latency.png'}")


if __name__ == "__main__":
    main()
