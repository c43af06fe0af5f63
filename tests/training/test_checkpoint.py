"""Checkpoints: plain dicts loadable with weights_only=True, and --resume continues exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.text import TOKENIZER_NAME
from core.vocab import Vocabulary
from training.config import TrainConfig
from training.ensemble import train_configuration
from training.exceptions import CheckpointError
from training.model import build_model
from training.pipeline import prepare_splits
from training.predict import encode_all, predict_logits
from training.prepared import PreparedData, member_dataset

SMALL = {"epochs": 3, "batch_size": 16, "max_len": 40, "vocab_size": 200, "embed_dim": 8, "hidden_size": 8,
         "val_fraction": 0.2, "baseline": False, "seed": 5, "word_dropout": 0.1, "embedding_lr_scale": 0.5,
         "members": 1, "bow_weight": 0.0}


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(line: str) -> None:
    if line.startswith("epoch  1/"):
        raise Interrupt


def _run(config: TrainConfig, log=lambda line: None):
    """A single LSTM trained the way lstm-train trains one, straight into ``config.output``."""
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    prepared = PreparedData(full)
    result = train_configuration(config, prepared, log, output=Path(config.output))
    return result, member_dataset(prepared, config, 0)


def test_checkpoint_round_trip_with_weights_only(synthetic_jsonl: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), **SMALL)
    result, data = _run(config)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == "lstm-worker-checkpoint" and checkpoint["format_version"] == 1
    assert checkpoint["labels"] == ["cars", "space", "sport"]
    assert checkpoint["preprocessing"] == {"max_len": 40, "lowercase": True, "tokenizer": TOKENIZER_NAME}
    assert checkpoint["train_config"]["hidden_size"] == 8 and checkpoint["epoch"] == result.best_epoch
    restored = build_model(checkpoint["model_config"])
    restored.load_state_dict(checkpoint["state_dict"])
    vocab = Vocabulary.from_dict(checkpoint["vocab"])
    ids = encode_all(vocab, data.test_texts, 40)
    cpu = torch.device("cpu")
    torch.testing.assert_close(torch.from_numpy(predict_logits(restored, ids, cpu)),
                               torch.from_numpy(predict_logits(result.model, ids, cpu)))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"optimizer_state", "scheduler_state", "history"} <= set(last)


def test_resume_continues_to_the_same_weights(synthetic_jsonl: Path, tmp_path: Path) -> None:
    straight = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path / "straight"), **SMALL)
    Path(straight.output).mkdir()
    reference, _ = _run(straight)

    interrupted = replace(straight, output=str(tmp_path / "interrupted"))
    Path(interrupted.output).mkdir()
    with pytest.raises(Interrupt):
        _run(interrupted, log=_stop_after_first_epoch)
    assert torch.load(Path(interrupted.output) / "last.pt", weights_only=True)["epoch"] == 1
    resumed, _ = _run(replace(interrupted, resume=True))

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == reference.best_epoch
    for name, tensor in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)


def test_resume_refuses_different_settings(synthetic_jsonl: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path), **{**SMALL, "epochs": 1})
    _run(config)
    with pytest.raises(CheckpointError, match="hidden_size"):
        _run(replace(config, hidden_size=16, resume=True))


def test_without_a_validation_split_the_last_epoch_is_kept(synthetic_jsonl: Path, tmp_path: Path) -> None:
    """--val-fraction 0: no early stopping, no validation scores made up from training ones, last epoch saved."""
    config = TrainConfig(data=str(synthetic_jsonl), output=str(tmp_path),
                         **{**SMALL, "val_fraction": 0.0, "patience": 1, "epochs": 4})
    lines: list[str] = []
    result, data = _run(config, log=lines.append)
    assert not data.val_texts
    assert any("no validation split" in line for line in lines)
    assert not any("val acc" in line for line in lines)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and not result.stopped_early
    assert all(h["val_macro_f1"] is None and h["val_loss"] is None for h in result.history)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == result.best_epoch == 4 and checkpoint["best_val_macro_f1"] is None
    assert result.best_val_macro_f1 is None
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    for name, tensor in last["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][name], tensor, msg=name)
