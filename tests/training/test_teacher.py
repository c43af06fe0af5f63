"""The distillation teacher: out-of-fold TF-IDF + LinearSVC probabilities, and a run that uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.vocab import Vocabulary
from tests.training.conftest import synthetic_rows
from training.config import TrainConfig
from training.teacher import teacher_accuracy, teacher_soft_targets
from training.trainer import MemberJob, _distillation_targets

LABELS = {"cars": 0, "space": 1, "sport": 2}


def _data(n_per_class: int = 40) -> tuple[list[str], list[int]]:
    rows = synthetic_rows(n_per_class, seed=3)
    return [r["text"] for r in rows], [LABELS[r["label"]] for r in rows]


def test_targets_are_distributions_that_follow_the_topics() -> None:
    texts, labels = _data()
    soft = teacher_soft_targets(texts, labels, 4, sharpness=6.0, seed=0)
    assert soft.shape == (len(texts), 4) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(soft[:, 3] == 0.0)  # a class with no training documents gets nothing
    assert teacher_accuracy(soft, labels) > 0.9


def test_scores_are_out_of_fold_so_a_mislabelled_document_is_not_memorised() -> None:
    texts, labels = _data()
    wrong = next(i for i, y in enumerate(labels) if y == LABELS["space"])
    labels[wrong] = LABELS["sport"]  # a space document labelled sport
    soft = teacher_soft_targets(texts, labels, 3, sharpness=6.0, seed=0)
    # A teacher that had seen the document would fit its wrong label; one that did not reads its words.
    assert soft[wrong].argmax() == LABELS["space"]


def test_sharpness_moves_towards_one_hot() -> None:
    texts, labels = _data()
    soft = teacher_soft_targets(texts, labels, 3, sharpness=1.0, seed=0).max(axis=1).mean()
    sharp = teacher_soft_targets(texts, labels, 3, sharpness=20.0, seed=0).max(axis=1).mean()
    assert sharp > soft + 0.2


def test_a_class_with_one_document_is_a_clear_error() -> None:
    texts, labels = _data(5)
    with pytest.raises(ValueError, match="at least 2 training documents in every class"):
        teacher_soft_targets([*texts, "lonely"], [*labels, 3], 4, sharpness=6.0, seed=0)


def test_a_distilled_label_smoothed_run_learns(lstm_train, synthetic_jsonl: Path, tmp_path: Path) -> None:
    result = lstm_train("--data", str(synthetic_jsonl), "--output", str(tmp_path), "--epochs", "3",
                        "--max-len", "40", "--embed-dim", "16", "--hidden-size", "16", "--vocab-size", "300",
                        "--batch-size", "16", "--no-baseline", "--label-smoothing", "0.1",
                        "--distill-weight", "1.0")
    assert result.returncode == 0, result.stderr
    assert "distillation: TF-IDF + LinearSVC teacher, out-of-fold accuracy" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["distill_weight"] == 1.0 and metrics["config"]["label_smoothing"] == 0.1
    assert metrics["distillation"]["teacher_out_of_fold_accuracy"] > 0.9
    assert metrics["accuracy"] > 0.8


def test_a_class_too_rare_for_the_teacher_skips_distillation_and_says_so() -> None:
    texts, labels = _data(5)
    texts, labels = [*texts, "lonely words"], [*labels, 3]
    job = MemberJob(name="", seed=0, vocab=Vocabulary.build(texts, max_size=100), vectors=None, train_texts=texts,
                    train_ids=[], train_labels=labels, val_ids=[], val_labels=[], label_names=["a", "b", "c", "d"])
    logged: list[str] = []
    targets, margins, report = _distillation_targets(TrainConfig(data="x", output="y"), job, logged.append)
    assert targets is None and margins is None and "at least 2 training documents" in report["skipped"]
    assert logged == [f"distillation skipped: {report['skipped']}"]
