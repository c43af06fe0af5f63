"""``--init-from``: shared tokens keep their vectors, the LSTMs theirs, the output layer if the labels match."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.vocab import Vocabulary
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.ensemble import train_configuration
from training.exceptions import TrainingError
from training.model import LSTMClassifier, ModelConfig
from training.pipeline import prepare_splits, run_training
from training.prepared import PreparedData
from training.transfer import InitSource, apply_init

SMS = {"text_field": "2", "label_field": "1", "epochs": 1, "batch_size": 32, "max_len": 40, "vocab_size": 3000,
       "embed_dim": 16, "hidden_size": 16, "members": 1, "jobs": 1, "baseline": False, "seed": 2,
       "distill_weight": 0.0, "bow_weight": 0.0}


@pytest.fixture(scope="module")
def source(sms_spam: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on 1,000 real messages."""
    out = tmp_path_factory.mktemp("source")
    run_training(TrainConfig(data=str(sms_spam), output=str(out), max_train_samples=1000, **SMS),
                 log=lambda line: None)
    return out


def _start(config: TrainConfig):
    """The weights a run starts from: a deadline already passed lets no batch train."""
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    return train_configuration(config, PreparedData(full), log=lambda line: None, deadline=time.time() - 1)


def test_same_labels_carry_over_vectors_lstm_and_output_layer(sms_spam: Path, source: Path) -> None:
    old = load_checkpoint(source)
    config = TrainConfig(data=str(sms_spam), output="unused", max_train_samples=2000, init_from=str(source),
                         **{**SMS, "seed": 9})
    start = _start(config)
    state = start.model.state_dict()
    for key, value in old["state_dict"].items():
        if not key.startswith("embedding."):
            torch.testing.assert_close(state[key], value, msg=key)
    old_vocab = Vocabulary.from_dict(old["vocab"])
    old_index = {t: i for i, t in enumerate(old_vocab.tokens)}
    shared = [(i, old_index[t]) for i, t in enumerate(start.vocab.tokens) if t in old_index]
    only_new = [i for i, t in enumerate(start.vocab.tokens) if t not in old_index]
    assert len(shared) > 500 and only_new, "2,000 messages share most, not all, of 1,000 messages' words"
    new_rows, old_rows = zip(*shared, strict=True)
    torch.testing.assert_close(state["embedding.weight"][list(new_rows)], old["state_dict"]["embedding.weight"][
        list(old_rows)])
    assert start.init["shared_tokens"] == len(shared) and start.init["output_layer"].startswith("carried over")

    scratch = _start(replace(config, init_from=None))
    assert not torch.equal(scratch.model.state_dict()["encoder.forward_layers.0.weight_ih_l0"],
                           state["encoder.forward_layers.0.weight_ih_l0"])


def test_a_new_label_set_gets_a_new_output_layer(synthetic_jsonl: Path, source: Path) -> None:
    old = load_checkpoint(source)
    config = TrainConfig(data=str(synthetic_jsonl), output="unused", init_from=str(source),
                         **{**SMS, "text_field": "text", "label_field": "label"})
    start = _start(config)
    state = start.model.state_dict()
    assert state["classifier.weight"].shape[0] == 3 and old["state_dict"]["classifier.weight"].shape[0] == 2
    torch.testing.assert_close(state["encoder.backward_layers.0.weight_hh_l0"],
                               old["state_dict"]["encoder.backward_layers.0.weight_hh_l0"])
    assert start.init["output_layer"].startswith("new")


def test_another_lstm_shape_is_refused_naming_the_option(sms_spam: Path, source: Path) -> None:
    config = TrainConfig(data=str(sms_spam), output="unused", max_train_samples=600, init_from=str(source),
                         **{**SMS, "hidden_size": 24})
    with pytest.raises(TrainingError, match="--hidden-size 16"):
        _start(config)


def test_the_cli_trains_from_a_checkpoint_and_reports_it(lstm_train, sms_spam: Path, source: Path,
                                                         tmp_path: Path) -> None:
    result = lstm_train("--data", str(sms_spam), "--text-field", "2", "--label-field", "1", "--output",
                        str(tmp_path), "--init-from", str(source), "--max-train-samples", "800", "--epochs", "1",
                        "--embed-dim", "16", "--hidden-size", "16", "--max-len", "40", "--vocab-size", "3000",
                        "--members", "2", "--jobs", "1", "--no-baseline")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["init_from"]["checkpoint"] == str(source) and metrics["config"]["init_from"] == str(source)
    assert metrics["accuracy"] > 0.85


def test_new_tokens_vectors_are_mapped_into_the_old_models_space() -> None:
    """Word vectors of another run live in another (here: linearly rotated) space; a token the old vocabulary
    lacks gets its vector through the map fitted on the shared ones, so the old LSTM can read it."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    truth = rng.normal(size=(62, 8))  # what the old model's space would give every word (ids 2.. are words)
    old_vocab = Vocabulary.build([" ".join(words[:45])], max_size=100)
    new_vocab = Vocabulary.build([" ".join(words[15:])], max_size=100)
    row = {w: 2 + i for i, w in enumerate(words)}

    def vectors(vocab: Vocabulary) -> torch.Tensor:
        return torch.tensor(np.stack([truth[row[t]] if t in row else np.zeros(8) for t in vocab.tokens]),
                            dtype=torch.float32)

    old_model = LSTMClassifier(ModelConfig(vocab_size=len(old_vocab), num_classes=2, embed_dim=8, hidden_size=4))
    old_state = {**old_model.state_dict(), "embedding.weight": vectors(old_vocab)}
    source = InitSource("old", (old_state,), tuple(old_vocab.tokens), ("a", "b"), {})
    new_model = LSTMClassifier(ModelConfig(vocab_size=len(new_vocab), num_classes=2, embed_dim=8, hidden_size=4))
    rotation = torch.tensor(rng.normal(size=(8, 8)), dtype=torch.float32)
    with torch.no_grad():
        new_model.embedding.weight.copy_(vectors(new_vocab) @ rotation)  # this run's own (rotated) vectors
    apply_init(new_model, source, new_vocab, ["a", "b"])
    only_new = [i for i, t in enumerate(new_vocab.tokens) if t not in set(old_vocab.tokens)]
    assert len(only_new) == 15
    torch.testing.assert_close(new_model.embedding.weight[only_new], vectors(new_vocab)[only_new], atol=1e-3,
                               rtol=1e-3)
    for key in ("encoder.forward_layers.0.weight_ih_l0", "classifier.weight"):
        torch.testing.assert_close(new_model.state_dict()[key], old_state[key])
