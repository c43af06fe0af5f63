"""Checkpoints as plain dicts of tensors and JSON-able values (``torch.load(weights_only=True)``).

No pickled objects: a checkpoint can be loaded safely from an untrusted
source, and ``lstm-export`` rebuilds everything from ``model_config`` and
``vocab`` alone. The format is described in TEAM.md / docs/training.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from core.text import TOKENIZER_NAME
from core.vocab import Vocabulary
from training.exceptions import CheckpointError

CHECKPOINT_FORMAT = "lstm-worker-checkpoint"
CHECKPOINT_VERSION = 1
BEST_FILE, LAST_FILE = "checkpoint.pt", "last.pt"


def make_checkpoint(*, model: torch.nn.Module, vocab: Vocabulary, labels: list[str], max_len: int,
                    train_config: dict, epoch: int, best_val_macro_f1: float | None) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "vocab": vocab.to_dict(),
        "labels": list(labels),
        "preprocessing": {"max_len": int(max_len), "lowercase": vocab.lowercase, "tokenizer": TOKENIZER_NAME},
        "train_config": dict(train_config),
        "epoch": int(epoch),
        "best_val_macro_f1": None if best_val_macro_f1 is None else float(best_val_macro_f1),
    }


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file, or a directory holding ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with lstm-train --output DIR)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; report one line
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an {CHECKPOINT_FORMAT} file")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {checkpoint.get('format_version')!r} is not "
                              f"supported (this version reads {CHECKPOINT_VERSION})")
    return checkpoint
