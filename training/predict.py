"""Scoring with a trained model: ids encoded once, length-sorted batches, logits and validation scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from core.vocab import Vocabulary, pad_batch
from training.metrics import classification_metrics

EVAL_BATCH_SIZE = 128


def encode_all(vocab: Vocabulary, texts: Sequence[str], max_len: int) -> list[np.ndarray]:
    return [np.asarray(vocab.token_ids(t, max_len), dtype=np.int64) for t in texts]


def predict_logits(model: nn.Module, id_lists: Sequence[np.ndarray], device: torch.device,
                   batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits ``[n, C]`` in input order; batches are length-sorted so little time goes to pads."""
    model.eval()
    order = np.argsort([len(x) for x in id_lists], kind="stable")
    out = np.zeros((len(id_lists), model.config.num_classes), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            ids, lengths = pad_batch([id_lists[i] for i in chosen])
            logits = model(torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device))
            out[chosen] = logits.float().cpu().numpy()
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def validation_scores(model: nn.Module, ids: Sequence[np.ndarray], labels: Sequence[int], device: torch.device) -> dict:
    logits = predict_logits(model, ids, device)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.as_tensor(labels)).item())
    metrics = classification_metrics(labels, logits, [str(i) for i in range(logits.shape[1])])
    return {"val_loss": loss, "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}
