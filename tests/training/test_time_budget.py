"""``lstm-train --time-budget``: a search on validation data, then the final model, on real short texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.support.model import run_cli


@pytest.fixture(scope="module")
def budget_run(lstm_train, sms_spam: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("budget")
    result = lstm_train("--data", str(sms_spam), "--text-field", "2", "--label-field", "1", "--output", str(out),
                        "--max-train-samples", "1500", "--epochs", "4", "--time-budget", "60s", timeout=900)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_the_search_reports_its_trials_and_trains_the_choice(budget_run: tuple[Path, str]) -> None:
    out, stdout = budget_run
    metrics = json.loads((out / "metrics.json").read_text())
    budget = metrics["time_budget"]
    assert budget["budget_seconds"] == 60 and metrics["config"]["time_budget"] == 60
    trials = [t for t in budget["trials"] if t["trial"] is not None]
    assert trials and trials[0]["epochs"] == 1, "the probe: the base shape for one epoch"
    assert all(t["seconds"] > 0 and "status" in t for t in trials)
    assert all(t["val_accuracy"] is None or 0 < t["val_accuracy"] <= 1 for t in trials)
    assert all((t["val_log_loss"] is None) == (t["val_accuracy"] is None) for t in trials)
    assert metrics["calibration"]["method"] != "none"  # the budgeted model is calibrated like any other
    assert "trial 1: max_len" in stdout and "time budget 60s" in stdout
    # metrics.json's config holds the settings the final model was trained with.
    chosen, config = budget["chosen"], metrics["config"]
    assert (chosen["max_len"], chosen["hidden_size"], chosen["epochs"], chosen["members"]) == (
        config["max_len"], config["hidden_size"], config["epochs"], config["members"])
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["preprocessing"]["max_len"] == config["max_len"]
    assert checkpoint["model_config"]["hidden_size"] == config["hidden_size"]
    considered = [(t["max_len"], t["hidden_size"]) for t in budget["trials"]]
    assert (config["max_len"], config["hidden_size"]) in considered
    assert 1 <= config["epochs"] <= 6 and 1 <= config["members"] <= 3  # --epochs 4, at most 1.5x in round 2
    # The chosen length fits the messages: it reads at least three quarters of them whole, and is short.
    lengths = budget["profile"]["length_percentiles"]
    assert lengths["p75"] <= config["max_len"] < max(lengths["p95"] + 8, 17)
    assert "why" in chosen and chosen["why"]
    verdict = "beats" if metrics["accuracy"] > metrics["baseline"]["accuracy"] else \
        "matches" if metrics["accuracy"] == metrics["baseline"]["accuracy"] else "does NOT beat"
    assert f"the model {verdict} its TF-IDF + LinearSVC baseline" in stdout


def test_the_budgeted_model_passes_the_export_gates(budget_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = budget_run
    result = run_cli("lstm-export", "--checkpoint", str(out), "--output", str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["parity"]["onnx"]["passed"] and manifest["parity"]["padding_invariance"]["passed"]


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--time-budget", "soon"], {}, "not a duration"),
    ([], {"LSTM_TRAIN_TIME_BUDGET": "5s"}, "at least 20s"),
    (["--time-budget", "1m", "--resume"], {}, "cannot be combined with --time-budget"),
])
def test_bad_budgets_are_one_clear_line(sms_spam: Path, tmp_path: Path, args, env, message) -> None:
    command = [str(Path(sys.executable).parent / "lstm-train"), "--data", str(sms_spam), "--output",
               str(tmp_path), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_tied_trials_go_to_the_lower_out_of_fold_log_loss_then_the_cheaper_shape() -> None:
    """A short budget ties every trial out of fold; the better-trained one wins, not the probe: surer where it is
    right and less sure where it is wrong, which no temperature gives the probe's uniform scores."""
    import numpy as np

    from training.budget_plan import Shape
    from training.time_budget import Search

    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1] * 20)
    right = np.eye(3)[labels]

    def trial(right_score: float, wrong_score: float) -> SimpleNamespace:
        """Right on the same documents as every other trial (a tie); ``*_score``: its top score where right/wrong."""
        def table(top: float) -> np.ndarray:
            return (1 - top) / 2 + (top - (1 - top) / 2) * right

        probabilities = table(right_score)
        probabilities[:4] = table(wrong_score)[:4][:, [1, 2, 0]]  # the first four documents wrong
        return SimpleNamespace(val_score=float((probabilities.argmax(1) == labels).mean()),
                               held_out=(probabilities, labels))

    probe, trained, larger = Shape(64, 32, 1), Shape(64, 32, 4), Shape(128, 64, 4)
    cost = {probe: 1.0, trained: 4.0, larger: 16.0}
    search = SimpleNamespace(shapes=[probe], estimate=cost.__getitem__,
                             results={probe: trial(0.6, 0.6), trained: trial(0.9, 0.4), larger: trial(0.9, 0.4)})
    assert Search.best(search) == trained  # ties with the probe on accuracy; ties with the larger on both
    search.results[probe] = SimpleNamespace(val_score=search.results[trained].val_score + 0.01, held_out=None)
    assert Search.best(search) == probe  # accuracy still decides first
