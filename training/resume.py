"""What ``last.pt`` carries beyond a checkpoint, so ``lstm-train --resume`` continues a member exactly.

One typed state and one save/load pair: the keys of the file are written in one place. The file is a
checkpoint (``training/checkpoint.py``) of the last finished epoch, plus the optimizer, the LR schedule,
the RNG and the progress below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.vocab import Vocabulary
from training.checkpoint import LAST_FILE, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.exceptions import CheckpointError


@dataclass
class Progress:
    """A member's training so far; ``epoch`` 0 before the first finished epoch."""

    epoch: int = 0
    # The best validation macro-F1 so far; -1 until an epoch is validated (or without a validation split).
    best_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0
    # CPU seconds too: on a shared machine wall time says more about the neighbours than about us.
    train_cpu_seconds: float = 0.0
    embedding_source: str = "random"
    history: list[dict] = field(default_factory=list)

    @property
    def best_known(self) -> float | None:
        """The best validation macro-F1, or None when none was measured."""
        return None if self.best_f1 < 0 else self.best_f1


@dataclass(frozen=True)
class ResumePoint:
    """An interrupted member as ``last.pt`` left it: its progress, weights and optimizer, schedule and RNG states."""

    progress: Progress
    weights: dict[str, Any]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    torch_rng_state: torch.Tensor


def save_last(checkpoint: dict[str, Any], progress: Progress, optimizer: torch.optim.Optimizer,
              scheduler: Any, output: Path) -> None:
    """Write ``output/last.pt``: ``checkpoint`` (the weights after ``progress.epoch``) and the state to resume."""
    save_checkpoint({
        **checkpoint,
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "torch_rng_state": torch.get_rng_state(),
        "history": progress.history,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
        "train_seconds": progress.train_seconds,
        "train_cpu_seconds": progress.train_cpu_seconds,
        "embedding_source": progress.embedding_source,
    }, output / LAST_FILE)


def load_last(config: TrainConfig, vocab: Vocabulary, output: Path) -> ResumePoint:
    """``output/last.pt``, refused in one line when it cannot continue with these settings and vocabulary."""
    state = load_checkpoint(output / LAST_FILE)
    if "optimizer_state" not in state:
        raise CheckpointError(f"{output / LAST_FILE}: has no optimizer state; it cannot be resumed")
    mismatched = config.resume_mismatches(state.get("train_config", {}))
    if mismatched:
        raise CheckpointError(
            f"--resume: settings differ from the interrupted run ({', '.join(mismatched)}); "
            "rerun with the same options or drop --resume")
    if state["vocab"] != vocab.to_dict():
        raise CheckpointError(f"--resume: {output / LAST_FILE} was trained with another vocabulary")
    best = state["best_val_macro_f1"]
    progress = Progress(
        epoch=int(state["epoch"]), best_f1=-1.0 if best is None else best, best_epoch=int(state["best_epoch"]),
        bad_epochs=int(state["bad_epochs"]), train_seconds=float(state["train_seconds"]),
        train_cpu_seconds=float(state.get("train_cpu_seconds", 0.0)),
        embedding_source=str(state.get("embedding_source", "resumed")), history=list(state["history"]))
    return ResumePoint(progress, state["state_dict"], state["optimizer_state"], state["scheduler_state"],
                       state["torch_rng_state"])
