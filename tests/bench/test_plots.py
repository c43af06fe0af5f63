"""The docs' pictures are drawn from the committed benchmark results, and the frontier is really the frontier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.plots import RESULTS, bench_runs, is_default, pareto

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def dominated(row: dict, rows: list[dict]) -> bool:
    """Some other bundle is at least as fast and as accurate, and better in one of the two."""
    speed, accuracy = row["docs_per_s"], row["test_accuracy"]
    return any(o["docs_per_s"] >= speed and o["test_accuracy"] >= accuracy
               and (o["docs_per_s"] > speed or o["test_accuracy"] > accuracy) for o in rows)


def test_the_frontier_is_every_bundle_nothing_beats_on_both_speed_and_accuracy() -> None:
    rows = json.loads((RESULTS / "frontier-latest.json").read_text())["rows"]
    front = pareto(rows)
    assert front and all(not dominated(row, rows) for row in front)
    assert all(dominated(row, rows) for row in rows if row not in front)


def test_the_default_model_is_recognised_by_its_shape() -> None:
    rows = json.loads((RESULTS / "frontier-latest.json").read_text())["rows"]
    defaults = [row for row in rows if is_default(row)]
    assert len(defaults) == 1  # the measured bundles include exactly one of the default's shape
    assert (defaults[0]["members"], defaults[0]["hidden_size"], defaults[0]["max_len"]) == (3, 96, 256)
    assert defaults[0]["bow_weight"] > 0  # 3 x BiLSTM 96 + the linear branch


def test_every_make_bench_run_is_found_and_both_pictures_are_drawn(tmp_path: Path) -> None:
    runs = bench_runs(RESULTS)
    assert len(runs) >= 20 and all("latency" in run["worker"] for run in runs)
    result = subprocess.run([sys.executable, "-m", "bench.plots", "--output", str(tmp_path)],
                            capture_output=True, text=True, cwd=RESULTS.parents[1])
    assert result.returncode == 0, result.stderr
    for name in ("frontier.png", "latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
