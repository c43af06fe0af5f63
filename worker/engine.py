"""Inference engine: token ids in, class probabilities out, through ONNX Runtime.

Used by ``lstm-worker classify`` (offline), by the streaming worker and by the
export parity gate, so all three score exactly the same way. It sorts a batch
by length and cuts it into sub-batches under a token budget, so little time
is spent on padding, then restores the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from core.bundle import Bundle
from core.exceptions import BundleError
from core.vocab import pad_batch
from worker.exceptions import EngineError, InferenceError

PROVIDERS = ("auto", "cpu", "cuda")
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]


def choose_providers(requested: str) -> list[str]:
    """ONNX Runtime providers for ``auto|cpu|cuda``; ``cuda`` without CUDA is an error."""
    if requested not in PROVIDERS:
        raise EngineError(f"unknown provider {requested!r}; choose one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if requested == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if requested == "cuda":
        raise EngineError(
            "provider 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu on a GPU machine or use --provider cpu"
        )
    return [_CPU]


class InferenceEngine:
    """One ONNX Runtime session over a verified bundle."""

    def __init__(
        self,
        bundle: Bundle,
        provider: str = "auto",
        threads: int = 0,
        max_batch_tokens: int = 16384,
        max_sub_batch: int = 64,
        sort_by_length: bool = True,
    ):
        self.bundle = bundle
        self.max_len = bundle.preprocessing.max_len
        self.max_batch_tokens = max(max_batch_tokens, self.max_len)
        self.max_sub_batch = max_sub_batch
        self.sort_by_length = sort_by_length
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = choose_providers(provider)
        try:
            model = bundle.read_model()
        except (BundleError, OSError) as exc:
            raise EngineError(str(exc)) from None
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"{bundle.model_path}: ONNX Runtime could not load the model: {exc}") from exc
        active = self.session.get_providers()
        if provider == "cuda" and _CUDA not in active:
            raise EngineError(f"provider 'cuda' requested but ONNX Runtime could not start it (active: {active})")
        self.provider = "cuda" if _CUDA in active else "cpu"
        model = bundle.manifest["model"]
        self._ids_name = model["inputs"]["ids"]
        self._lengths_name = model["inputs"]["lengths"]
        self._output_name = model["output"]
        self.labels = bundle.labels

    def token_ids(self, text: str) -> list[int]:
        """The bundle's text→ids contract, truncated at the model's max length."""
        return self.bundle.vocab.token_ids(text, self.max_len)

    def sub_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Index groups, each padded to at most ``max_batch_tokens`` and ``max_sub_batch`` rows."""
        lengths = np.asarray(lengths)
        order = np.argsort(lengths, kind="stable") if self.sort_by_length else np.arange(len(lengths))
        groups: list[np.ndarray] = []
        start = 0
        while start < len(order):
            end, width = start, 0
            while end < len(order) and end - start < self.max_sub_batch:
                candidate = max(width, int(lengths[order[end]]))
                if end > start and candidate * (end - start + 1) > self.max_batch_tokens:
                    break
                width, end = candidate, end + 1
            groups.append(order[start:end])
            start = end
        return groups

    def run_padded(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call on an already padded batch."""
        try:
            return self.session.run([self._output_name], {self._ids_name: ids, self._lengths_name: lengths})[0]
        except Exception as exc:
            raise InferenceError(f"inference failed on a batch of {len(lengths)}: {exc}") from exc

    def predict_proba(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities ``[n, classes]`` in the order of ``id_lists``."""
        result = np.empty((len(id_lists), len(self.labels)), dtype=np.float32)
        for group in self.sub_batches([len(x) for x in id_lists]):
            ids, lengths = pad_batch([id_lists[i] for i in group])
            result[group] = self.run_padded(ids, lengths)
        return result

    def predict_texts(self, texts: Sequence[str], top_k: int = 1) -> list[Prediction]:
        return self.to_predictions(self.predict_proba([self.token_ids(t) for t in texts]), top_k)

    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1) -> list[Prediction]:
        k = max(1, min(top_k, len(self.labels)))
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = self.labels
        return [
            Prediction(
                labels[row[0]],
                float(probs[row[0]]),
                tuple((labels[j], float(probs[j])) for j in row),
            )
            for probs, row in zip(probabilities, best, strict=True)
        ]
