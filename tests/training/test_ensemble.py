"""``--members N``: disjoint validation folds, one shared vocabulary, the averaged model on disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.vocab import Vocabulary
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.ensemble import resolve_jobs
from training.model import EnsembleClassifier, build_model
from training.pipeline import prepare_splits, run_training
from training.predict import encode_all, predict_logits, softmax
from training.prepared import PreparedData, member_dataset

SMALL = {"epochs": 2, "batch_size": 16, "max_len": 40, "vocab_size": 200, "embed_dim": 8, "hidden_size": 8,
         "val_fraction": 0.2, "baseline": False, "seed": 5, "members": 2, "distill_weight": 0.0,
         "bow_weight": 0.0}


def test_members_hold_out_disjoint_folds_and_together_see_every_document(synthetic_jsonl: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output="unused", **{**SMALL, "members": 3})
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    parts = [member_dataset(PreparedData(full), config, i) for i in range(3)]
    single, _ = prepare_splits(replace(config, members=1))
    assert parts[0].val_texts == single.val_texts, "member 1 validates on the split a single model would use"
    held = [set(p.val_texts) for p in parts]
    assert all(len(h) == len(single.val_texts) for h in held)
    assert not (held[0] & held[1]) and not (held[0] & held[2]) and not (held[1] & held[2])
    for part in parts:
        assert sorted([*part.train_texts, *part.val_texts]) == sorted(full.train_texts)


def test_ensemble_run_writes_the_averaged_model_and_matches_its_members(synthetic_jsonl: Path,
                                                                      tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path / "parallel"), jobs=2, **SMALL)
    metrics = run_training(config, log=lambda line: None)

    checkpoint = load_checkpoint(tmp_path / "parallel")
    model = build_model(checkpoint["model_config"])
    assert isinstance(model, EnsembleClassifier) and checkpoint["model_config"]["members"] == 2
    model.load_state_dict(checkpoint["state_dict"])
    members = []
    for index in (1, 2):
        member_checkpoint = load_checkpoint(tmp_path / "parallel" / f"member-{index}")
        assert member_checkpoint["vocab"] == checkpoint["vocab"], "one vocabulary for every member"
        member = build_model(member_checkpoint["model_config"])
        member.load_state_dict(member_checkpoint["state_dict"])
        members.append(member)
    assert not torch.equal(members[0].classifier.weight, members[1].classifier.weight)

    data, _ = prepare_splits(replace(config, val_fraction=0.0))
    ids = encode_all(Vocabulary.from_dict(checkpoint["vocab"]), data.test_texts, config.max_len)
    device = torch.device("cpu")
    averaged = np.mean([softmax(predict_logits(m, ids, device)) for m in members], axis=0)
    np.testing.assert_allclose(softmax(predict_logits(model, ids, device)), averaged, atol=1e-6)
    accuracy = float((averaged.argmax(1) == np.asarray(data.test_labels)).mean())
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert [m["member"] for m in metrics["members"]] == ["member 1", "member 2"]
    assert [m["seed"] for m in metrics["members"]] == [5, 6]
    assert {h["member"] for h in metrics["history"]} == {1, 2}
    assert metrics["data"]["train"] + metrics["data"]["validation"] == len(data.train_texts)

    # The same run one member after the other in this process gives the same weights.
    sequential = run_training(replace(config, output=str(tmp_path / "sequential"), jobs=1), log=lambda line: None)
    again = load_checkpoint(tmp_path / "sequential")
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][key], value, msg=key)
    assert sequential["accuracy"] == metrics["accuracy"]


def test_resume_skips_a_finished_member_and_trains_one_that_never_started(synthetic_jsonl: Path,
                                                                          tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), jobs=1, **SMALL)
    first = run_training(config, log=lambda line: None)
    stamp = (tmp_path / "member-1" / "checkpoint.pt").stat().st_mtime_ns
    for name in ("checkpoint.pt", "last.pt"):  # as if stopped before member 2's first epoch ended
        (tmp_path / "member-2" / name).unlink()
    resumed = run_training(replace(config, resume=True), log=lambda line: None)
    assert (tmp_path / "member-1" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert resumed["accuracy"] == first["accuracy"]
    assert [m["best_val_macro_f1"] for m in resumed["members"]] == [m["best_val_macro_f1"] for m in first["members"]]


def test_resume_with_more_members_keeps_the_trained_ones_and_trains_the_rest(synthetic_jsonl: Path,
                                                                           tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), jobs=1, **SMALL)
    first = run_training(config, log=lambda line: None)
    stamps = [(tmp_path / f"member-{k}" / "checkpoint.pt").stat().st_mtime_ns for k in (1, 2)]
    grown = run_training(replace(config, members=3, resume=True), log=lambda line: None)
    assert [(tmp_path / f"member-{k}" / "checkpoint.pt").stat().st_mtime_ns for k in (1, 2)] == stamps
    assert [m["best_val_macro_f1"] for m in grown["members"][:2]] == [m["best_val_macro_f1"] for m in first["members"]]
    assert [m["seed"] for m in grown["members"]] == [5, 6, 7]
    assert load_checkpoint(tmp_path)["model_config"]["members"] == 3


def test_growing_one_lstm_without_the_branch_says_why_member_1_trains_again(synthetic_jsonl: Path,
                                                                           tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), jobs=1, **{**SMALL, "members": 1})
    run_training(config, log=lambda line: None)
    lines: list[str] = []
    grown = run_training(replace(config, members=2, resume=True), log=lines.append)
    assert any("member 1 trains again" in line for line in lines)
    assert [m["seed"] for m in grown["members"]] == [5, 6]
    assert load_checkpoint(tmp_path)["model_config"]["members"] == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"members": 5, "val_fraction": 0.2}, "--members x --val-fraction must stay below 1"),
    ({"members": 0}, "--members must be at least 1"),
])
def test_impossible_member_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        TrainConfig(data="x", output="y", **options)


def test_jobs_follow_cores_threads_and_device() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    base = TrainConfig(data="x", output="y", members=3, threads=1)
    assert resolve_jobs(base) == min(3, 2 * cores)
    assert resolve_jobs(replace(base, members=4 * cores)) == 2 * cores
    assert resolve_jobs(replace(base, jobs=1)) == 1
    assert resolve_jobs(replace(base, jobs=8)) == 3
    assert resolve_jobs(replace(base, device="cuda")) == 1
    assert resolve_jobs(replace(base, threads=0)) == 2


def test_a_failing_member_process_stops_the_run_with_its_error(synthetic_jsonl: Path, tmp_path: Path) -> None:
    from training.exceptions import CheckpointError

    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), jobs=2, **SMALL)
    run_training(config, log=lambda line: None)
    (tmp_path / "member-2" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="member-2/last.pt"):
        run_training(replace(config, resume=True), log=lambda line: None)
