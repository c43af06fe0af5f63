"""The one function that trains a configuration: in memory, against a deadline, reusing what it prepared."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from training.config import TrainConfig
from training.ensemble import train_configuration
from training.pipeline import prepare_splits, run_training
from training.prepared import PreparedData

SMS = {"text_field": "2", "label_field": "1", "max_train_samples": 800, "epochs": 2, "batch_size": 32,
       "max_len": 40, "vocab_size": 2000, "embed_dim": 16, "hidden_size": 16, "members": 2, "jobs": 1,
       "baseline": False, "seed": 4}


def _prepared(config: TrainConfig) -> PreparedData:
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    return PreparedData(full)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, msg=name)


def test_in_memory_it_writes_nothing_and_trains_what_the_default_path_trains(sms_spam: Path, tmp_path: Path,
                                                                             monkeypatch) -> None:
    config = TrainConfig(data=str(sms_spam), output=str(tmp_path / "run"), **SMS)
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    result = train_configuration(config, _prepared(config), log=lambda line: None)
    assert not any(scratch.iterdir()) and not (tmp_path / "run").exists(), "nothing written"
    assert result.val_score is not None and 0.5 < result.val_score <= 1.0
    assert result.bow_selection["accuracy"] == result.val_score  # the score of the model as built

    metrics = run_training(config, log=lambda line: None)  # the default path, on disk
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][name], tensor, msg=name)
    assert metrics["val_out_of_fold_accuracy"] == result.val_score


def test_a_second_configuration_reuses_vocabulary_vectors_and_teachers_without_changing_results(
        sms_spam: Path) -> None:
    config = TrainConfig(data=str(sms_spam), output="unused", **{**SMS, "epochs": 1})
    prepared = _prepared(config)
    first = train_configuration(config, prepared, log=lambda line: None, quiet=True)
    assert prepared.teacher_margins(config, 0) is not None and prepared.teacher_margins(config, 1) is not None
    wider = replace(config, hidden_size=24)
    assert prepared.features(wider).vocab is first.vocab, "one vocabulary for every configuration"
    assert prepared.features(wider).vectors is prepared.features(config).vectors
    lines: list[str] = []
    cached = train_configuration(wider, prepared, log=lines.append)
    fresh = train_configuration(wider, _prepared(config), log=lambda line: None)
    _states_equal(fresh.model, cached.model)
    assert cached.val_score == fresh.val_score
    assert cached.members[0]["distillation"]["teacher_out_of_fold_accuracy"] == \
        fresh.members[0]["distillation"]["teacher_out_of_fold_accuracy"]


def test_no_batch_starts_after_the_deadline(sms_spam: Path) -> None:
    config = TrainConfig(data=str(sms_spam), output="unused", **{**SMS, "members": 1, "bow_weight": 0.0})
    prepared = _prepared(config)
    passed = train_configuration(config, prepared, log=lambda line: None, deadline=time.time() - 1)
    assert passed.cut_short and len(passed.history) == 1 and passed.history[0]["share_of_epoch"] == 0.0
    untrained = train_configuration(replace(config, epochs=1), prepared, log=lambda line: None,
                                    deadline=time.time() - 1)
    _states_equal(untrained.model, passed.model)  # both the initial weights: nothing was trained
    finished = train_configuration(config, prepared, log=lambda line: None, deadline=time.time() + 3600)
    assert not finished.cut_short and len(finished.history) == 2
    assert "share_of_epoch" not in finished.history[0]
