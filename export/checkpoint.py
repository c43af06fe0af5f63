"""Read what ``lstm-train --output`` wrote: checkpoint.pt, validation.jsonl, metrics.json.

``torch.load(weights_only=True)`` only: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.bundle import Preprocessing
from core.vocab import Vocabulary
from export.calibrated import CalibratedExplainingModel
from export.exceptions import CheckpointError
from training.calibration import Calibration
from training.model import ModelConfig, ProbabilityModel, build_model

CHECKPOINT_FILE, VALIDATION_FILE, METRICS_FILE = "checkpoint.pt", "validation.jsonl", "metrics.json"
CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION = "lstm-worker-checkpoint", 1


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    vocab: Vocabulary
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    # What lstm-train fitted out of fold (training.calibration); the identity for checkpoints trained before it.
    calibration: Calibration = Calibration()
    # lstm-train's out-of-fold probabilities of the final model, raw [documents, labels]; None before calibration.
    held_out_probabilities: np.ndarray | None = None

    def probability_model(self) -> ProbabilityModel:
        """A fresh eval-mode copy of the trained model with a softmax head (the probabilities that get exported)."""
        classifier = build_model(self.model_config)
        try:
            classifier.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            path = self.directory / CHECKPOINT_FILE
            raise CheckpointError(f"{path}: weights do not fit model_config: {exc}") from None
        return ProbabilityModel(classifier).eval()

    def explaining_model(self) -> CalibratedExplainingModel:
        """What gets exported: the calibrated probabilities, and the predicted label's attributions per position."""
        return CalibratedExplainingModel(self.probability_model().classifier, self.calibration).eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(directory: str | Path) -> Checkpoint:
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; point --checkpoint at the directory lstm-train --output wrote")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an {CHECKPOINT_FORMAT} file")
    if data.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {data.get('format_version')!r} is not supported "
            f"(this lstm-export reads {CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        config = ModelConfig(**data["model_config"])
        vocab = Vocabulary.from_dict(data["vocab"])
        labels = tuple(str(x) for x in data["labels"])
        prep = data["preprocessing"]
        preprocessing = Preprocessing(int(prep["max_len"]), bool(prep["lowercase"]), str(prep["tokenizer"]))
        state_dict = data["state_dict"]
        calibration = Calibration.from_dict(data.get("calibration"))
        held_out = data.get("held_out_probabilities")
        held_out = None if held_out is None else held_out.numpy().astype(np.float32)
    except Exception as exc:  # KeyError/TypeError/ValueError/VocabularyError: all mean "malformed"
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
    if len(vocab) != config.vocab_size or len(labels) != config.num_classes:
        raise CheckpointError(
            f"{path}: vocab ({len(vocab)}) / labels ({len(labels)}) do not match model_config "
            f"({config.vocab_size} / {config.num_classes})"
        )
    if vocab.lowercase != preprocessing.lowercase or vocab.tokenizer != preprocessing.tokenizer:
        raise CheckpointError(f"{path}: vocabulary and preprocessing disagree on lowercasing or tokenizer")
    metrics_path = directory / METRICS_FILE
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{metrics_path}: not valid JSON ({exc})") from None
    provenance = {
        "checkpoint_sha256": _sha256(path),
        "epoch": data.get("epoch"),
        "best_val_macro_f1": data.get("best_val_macro_f1"),
        "train_config": data.get("train_config", {}),
    }
    if calibration.class_bias is not None and len(calibration.class_bias) != len(labels):
        raise CheckpointError(f"{path}: the calibration's class bias has {len(calibration.class_bias)} entries for "
                              f"{len(labels)} labels")
    if held_out is not None and (held_out.ndim != 2 or held_out.shape[1] != len(labels)):
        raise CheckpointError(f"{path}: held_out_probabilities of shape {tuple(held_out.shape)} do not fit "
                              f"{len(labels)} labels")
    return Checkpoint(directory, config, state_dict, vocab, labels, preprocessing, metrics, provenance, calibration,
                      held_out)


def load_validation(directory: str | Path, labels: tuple[str, ...],
                    path: str | Path | None = None) -> list[tuple[str, str]]:
    """Held-out ``(text, label)`` documents for the parity and int8 gates.

    ``path`` (``--parity-data``) defaults to the validation split lstm-train wrote into ``directory``.
    """
    path = Path(path) if path is not None else Path(directory) / VALIDATION_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; the parity gate needs the validation split lstm-train writes "
                              "(or give --parity-data)")
    known = set(labels)
    documents: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text, label = record["text"], record["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{path}:{number}: expected {{'text', 'label'}} JSON ({exc})") from None
            if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
                label = labels[label]  # a class index instead of its name
            if not isinstance(text, str) or str(label) not in known:
                raise CheckpointError(f"{path}:{number}: text must be a string and label one of the model's labels")
            documents.append((text, str(label)))
    if not documents:
        raise CheckpointError(f"{path}: empty; the parity gate needs validation documents: a model trained with "
                              "--val-fraction 0 has none, give held-out ones with --parity-data FILE "
                              "(JSONL, {'text', 'label'} per line)")
    return documents
