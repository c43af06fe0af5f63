"""The lstm-train CLI end to end: the shared tiny 20NG run, a synthetic run with baseline, evaluate, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPORT_FILES = ("checkpoint.pt", "last.pt", "metrics.json", "confusion_matrix.png", "learning_curves.png",
                "validation.jsonl")
FAST = ["--epochs", "3", "--max-len", "40", "--embed-dim", "16", "--hidden-size", "16", "--vocab-size", "300",
        "--batch-size", "16", "--seed", "1"]


def test_tiny_real_run_learns_and_writes_the_report(tiny_checkpoint_dir: Path) -> None:
    for name in REPORT_FILES:
        assert (tiny_checkpoint_dir / name).stat().st_size > 0, name
    metrics = json.loads((tiny_checkpoint_dir / "metrics.json").read_text())
    # 20 classes: chance is 0.05. Two tiny epochs on 3,400 documents must do far better.
    assert metrics["accuracy"] > 0.2 and metrics["best_val_macro_f1"] > 0.15
    assert metrics["examples"] == 7532 and len(metrics["per_class"]) == 20
    assert 0 < metrics["mean_average_precision"] <= 1 and "baseline" not in metrics
    assert metrics["config"]["max_train_samples"] == 4000 and metrics["data"]["validation"] == 600
    checkpoint = torch.load(tiny_checkpoint_dir / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) >= {"format", "format_version", "model_config", "state_dict", "vocab", "labels",
                               "preprocessing", "train_config", "epoch", "best_val_macro_f1"}
    rows = [json.loads(line) for line in (tiny_checkpoint_dir / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == 600 and {r["label"] for r in rows} == set(checkpoint["labels"])


@pytest.fixture(scope="module")
def synthetic_run(lstm_train, synthetic_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic-run")
    result = lstm_train("--data", str(synthetic_jsonl), "--output", str(out), *FAST)
    assert result.returncode == 0, result.stderr
    assert "TF-IDF+SVC" in result.stdout and "macro-F1" in result.stdout  # the summary table
    return out


def test_synthetic_run_reports_lstm_and_baseline(synthetic_run: Path) -> None:
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    for report in (metrics, metrics["baseline"]):
        assert {"accuracy", "macro_f1", "mean_average_precision", "per_class", "train_seconds"} <= set(report)
        assert report["accuracy"] > 0.8  # topic words make this task easy
    assert set(metrics["per_class"]) == {"cars", "space", "sport"}
    assert metrics["config"]["epochs"] == 3 and len(metrics["history"]) == metrics["epochs_run"]


def test_members_trained_in_processes_leave_nothing_for_the_resource_tracker(lstm_train, synthetic_jsonl: Path,
                                                                            tmp_path: Path) -> None:
    # More members than processes: a pool worker that trained one and was then terminated used to leave a
    # semaphore behind, and Python warned about it on stderr at exit (about one run in three).
    result = lstm_train("--data", str(synthetic_jsonl), "--output", str(tmp_path), *FAST, "--members", "4",
                        "--jobs", "2", "--no-baseline")
    assert result.returncode == 0, result.stderr
    assert "leaked semaphore" not in result.stderr, result.stderr


def test_evaluate_scores_an_existing_checkpoint(lstm_train, synthetic_run: Path, synthetic_jsonl: Path,
                                                tmp_path: Path) -> None:
    result = lstm_train("--evaluate", str(synthetic_run), "--data", str(synthetic_jsonl),
                     "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["examples"] == 240 and evaluation["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/data.csv", "--output", "OUT"], "not found"),
        (["--data", "DATA", "--output", "OUT", "--label-field", "queue"], "--label-field"),
        (["--data", "DATA", "--output", "OUT", "--device", "cuda"], "cuda"),
        (["--data", "DATA"], "--output is required"),
        (["--evaluate", "/nonexistent", "--data", "DATA"], "checkpoint not found"),
    ],
)
def test_input_errors_are_one_clear_line(lstm_train, args, message, synthetic_jsonl: Path, tmp_path: Path) -> None:
    args = [str(synthetic_jsonl) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = lstm_train(*args, "--epochs", "1")
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3 and lines[-1].startswith("Error:")  # click's "Usage:"/"Try" lines at most


def test_help_names_every_env_var_and_version(lstm_train) -> None:
    result = lstm_train("--help")
    assert result.returncode == 0
    for var in ("LSTM_TRAIN_DATA", "LSTM_TRAIN_OUTPUT", "LSTM_TRAIN_EPOCHS", "LSTM_TRAIN_THREADS",
                "LSTM_TRAIN_BASELINE", "LSTM_TRAIN_RESUME", "LSTM_TRAIN_EMBEDDINGS", "LSTM_TRAIN_TIME_BUDGET",
                "LSTM_TRAIN_INIT_FROM", "LSTM_TRAIN_BOW_WEIGHT"):
        assert var in result.stdout
    assert lstm_train("--version").stdout.startswith("lstm-train, version")
