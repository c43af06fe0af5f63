"""``--bow-weight auto``: the linear branch's weight chosen on validation folds, out of fold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from training.bag_of_words import linear_margins, with_bag_of_words
from training.bow_selection import (
    WEIGHTS,
    FoldScores,
    choose_bow_weight,
    choose_branch,
    fold_margins,
    mixed_probabilities,
)
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data import load_dataset
from training.model import LSTMClassifier, ModelConfig
from training.pipeline import run_training

SMS = {"text_field": "2", "label_field": "1", "max_train_samples": 900, "epochs": 1, "batch_size": 32,
       "max_len": 40, "vocab_size": 2000, "embed_dim": 16, "hidden_size": 16, "members": 2, "jobs": 1,
       "distill_weight": 0.0, "baseline": False, "seed": 3}


def _fold(lstm_correct: np.ndarray, linear_correct: np.ndarray, confidence: float) -> FoldScores:
    """Two classes; each part puts ``confidence`` on the true class where it is right, else on the other."""
    labels = np.zeros(len(lstm_correct), dtype=np.int64)
    lstm = np.where(lstm_correct[:, None], [[confidence, 1 - confidence]], [[1 - confidence, confidence]])
    margins = np.where(linear_correct[:, None], [[1.0, -1.0]], [[-0.2, 0.2]])
    return FoldScores(lstm, margins, labels)


def test_the_weight_where_the_mix_beats_both_parts_is_chosen() -> None:
    # The LSTM is right on the first 60, confidently; the linear part on the last 60 (of 100), confidently
    # when right and barely when wrong: mixing fixes most of the LSTM's errors.
    lstm_right = np.arange(100) < 60
    linear_right = np.arange(100) >= 40
    choice = choose_bow_weight([_fold(lstm_right, linear_right, 0.6)])
    assert choice["lstm_accuracy"] == 0.6 and choice["linear_accuracy"] == 0.6
    assert choice["accuracy"] == 1.0 and 0 < choice["weight"] < 1
    assert choice["accuracy"] == max(s["accuracy"] for s in choice["scores"])
    smaller = [s for s in choice["scores"] if s["weight"] < choice["weight"]]
    assert all(s["accuracy"] < 1.0 for s in smaller), "ties go to the smaller weight"
    assert {s["weight"] for s in choice["scores"]} == set(WEIGHTS) and choice["documents"] == 100


def test_a_branch_that_only_agrees_gets_weight_zero() -> None:
    right = np.ones(50, dtype=bool)
    choice = choose_bow_weight([_fold(right, right, 0.9), _fold(right, right, 0.9)])
    assert choice["weight"] == 0.0 and choice["accuracy"] == 1.0 and choice["folds"] == 2


def test_the_features_that_score_higher_out_of_fold_are_kept_and_ties_keep_single_words() -> None:
    lstm_right = np.arange(100) < 60
    weaker, stronger = _fold(lstm_right, np.arange(100) >= 70, 0.6), _fold(lstm_right, np.arange(100) >= 40, 0.6)
    pairs_help = choose_branch({0: [weaker], 2**10: [stronger]})
    assert pairs_help["bigram_buckets"] == 2**10 and pairs_help["accuracy"] == 1.0
    assert [row["bigram_buckets"] for row in pairs_help["features"]] == [0, 2**10]
    assert pairs_help["features"][0]["accuracy"] < 1.0
    pairs_hurt = choose_branch({2**10: [weaker], 0: [stronger]})
    assert pairs_hurt["bigram_buckets"] == 0 and pairs_hurt["weight"] == choose_bow_weight([stronger])["weight"]
    assert choose_branch({0: [stronger], 2**10: [stronger]})["bigram_buckets"] == 0, "a tie keeps the smaller model"


def test_mixed_probabilities_are_what_the_hybrid_graph_outputs() -> None:
    rng = np.random.default_rng(0)
    lstm = rng.dirichlet(np.ones(4), 10)
    margins = rng.normal(size=(10, 4))
    mixed = mixed_probabilities(lstm, margins, 0.3, 6.0)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-12)
    linear = np.exp(6 * margins) / np.exp(6 * margins).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mixed, 0.7 * lstm + 0.3 * linear, rtol=1e-12)


def test_fold_margins_are_the_final_branch_fitted_without_the_fold() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 120)
    docs = [np.concatenate([rng.integers(2, 50, 12), rng.integers(2 + 10 * y, 12 + 10 * y, 4)]) for y in labels]
    train, fold = list(range(90)), list(range(90, 120))
    margins = fold_margins([docs[i] for i in fold], [docs[i] for i in train], labels[train], 50, 3, seed=0)
    lstm = LSTMClassifier(ModelConfig(vocab_size=50, num_classes=3, embed_dim=4, hidden_size=4))
    hybrid = with_bag_of_words(lstm, [docs[i] for i in train], labels[train], weight=0.3, sharpness=6.0, seed=0,
                               log=lambda line: None)
    np.testing.assert_allclose(margins, linear_margins(hybrid, [docs[i] for i in fold]), rtol=1e-6, atol=1e-9)


def test_auto_is_the_default_and_records_its_choice_on_real_data(sms_spam: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(sms_spam), output=str(tmp_path / "auto"), **SMS)
    assert config.bow_weight == "auto"
    metrics = run_training(config, log=lambda line: None)
    choice = metrics["bow_weight_selection"]
    # Every member's fold (2 x 10% of 900 stratified documents), each scored by models that did not train on it.
    assert choice["folds"] == 2 and choice["documents"] == sum(m["validation_documents"] for m in metrics["members"])
    assert choice["accuracy"] == max(s["accuracy"] for s in choice["scores"]) >= choice["lstm_accuracy"]
    model_config = load_checkpoint(tmp_path / "auto")["model_config"]
    assert model_config["bow_weight"] == choice["weight"]
    # Single words and words with pairs were both scored on the folds; the model holds the one chosen.
    assert [row["bigram_buckets"] for row in choice["features"]] == [0, config.bow_bigram_buckets]
    assert choice["accuracy"] == max(row["accuracy"] for row in choice["features"])
    assert model_config["bow_bigram_buckets"] == (choice["bigram_buckets"] if choice["weight"] > 0 else 0)
    if choice["weight"] > 0:
        assert model_config["bow_sharpness"] == choice["sharpness"] and "parts" in metrics
    assert metrics["config"]["bow_weight"] == "auto"

    explicit = run_training(replace(config, output=str(tmp_path / "off"), bow_weight=0.0), log=lambda line: None)
    assert "bow_weight_selection" not in explicit and "parts" not in explicit
    assert load_checkpoint(tmp_path / "off")["model_config"]["bow_weight"] == 0.0


def test_without_folds_auto_adds_no_branch_and_says_why(sms_spam: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(sms_spam), output=str(tmp_path), val_fraction=0.0, **{**SMS, "members": 1})
    metrics = run_training(config, log=lambda line: None)
    assert metrics["bow_weight_selection"]["weight"] == 0.0 and "--val-fraction 0" in metrics[
        "bow_weight_selection"]["reason"]
    assert load_checkpoint(tmp_path)["model_config"]["bow_weight"] == 0.0


def test_the_test_split_of_a_file_does_not_move_with_the_seed(sms_spam: Path) -> None:
    first = load_dataset(sms_spam, text_field="2", label_field="1", val_fraction=0.1, seed=0)
    other = load_dataset(sms_spam, text_field="2", label_field="1", val_fraction=0.1, seed=7)
    assert first.test_texts == other.test_texts and first.test_labels == other.test_labels
    assert first.val_texts != other.val_texts, "the seed still moves the validation split"


@pytest.mark.parametrize(("value", "message"), [("1.5", "not in [0, 1)"), ("often", "neither 'auto'")])
def test_a_bad_bow_weight_is_one_clear_line(lstm_train, sms_spam: Path, tmp_path: Path, value, message) -> None:
    result = lstm_train("--data", str(sms_spam), "--output", str(tmp_path), "--bow-weight", value)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
