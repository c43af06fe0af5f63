"""Offline throughput: the seed article's per-message PyTorch way, ORT per message, and batched engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from core.bundle import Bundle
from core.engine import InferenceEngine


def _rate(count: int, seconds: float) -> dict:
    return {"docs": count, "seconds": round(seconds, 3), "docs_per_s": round(count / seconds, 1)}


def timed(fn: Callable[[], object], count: int) -> dict:
    start = time.perf_counter()
    fn()
    return _rate(count, time.perf_counter() - start)


def torch_per_message(checkpoint_path: str, texts: Sequence[str], threads: int) -> dict:
    """One document at a time through the PyTorch model, as a notebook would serve it."""
    import torch  # only here: the rest of the bench, like the worker, is torch-free

    from training.model import ProbabilityModel, build_model

    torch.set_num_threads(threads)
    ckpt = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    scorer = ProbabilityModel(model).eval()
    from core.vocab import Vocabulary

    vocab = Vocabulary.from_dict(ckpt["vocab"])
    max_len = int(ckpt["preprocessing"]["max_len"])

    def run() -> None:
        with torch.inference_mode():
            for text in texts:
                ids, lengths = vocab.encode([text], max_len)
                scorer(torch.from_numpy(ids), torch.from_numpy(lengths))

    return timed(run, len(texts))


def ort_per_message(bundle: Bundle, texts: Sequence[str], threads: int) -> dict:
    engine = InferenceEngine(bundle, provider="cpu", threads=threads)

    def run() -> None:
        for text in texts:
            engine.predict_proba([engine.token_ids(text)])

    return timed(run, len(texts))


def ort_batched(bundle: Bundle, texts: Sequence[str], threads: int, provider: str, bucketed: bool,
                batch_size: int = 256) -> dict:
    """The engine as ``lstm-worker classify`` drives it, tokenisation included."""
    engine = InferenceEngine(bundle, provider=provider, threads=threads, sort_by_length=bucketed)

    def run() -> None:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            engine.predict_proba([engine.token_ids(t) for t in chunk])

    engine.predict_proba([engine.token_ids(t) for t in texts[:32]])  # warm-up: allocator, kernels
    result = timed(run, len(texts))
    result["padded_token_fraction"] = round(padding_fraction(engine, texts, batch_size), 3)
    return result


def padding_fraction(engine: InferenceEngine, texts: Sequence[str], batch_size: int) -> float:
    """Share of the tokens fed to the LSTM that are pads, under the engine's sub-batching."""
    real = padded = 0
    for start in range(0, len(texts), batch_size):
        lengths = np.array([len(engine.token_ids(t)) for t in texts[start : start + batch_size]])
        for group in engine.sub_batches(lengths):
            real += int(lengths[group].sum())
            padded += int(lengths[group].max()) * len(group)
    return 1 - real / padded
