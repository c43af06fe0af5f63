"""What the machine can do and what the model asks of it: FP32 matmul peak and LSTM FLOPs."""

from __future__ import annotations

import time

import numpy as np


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best-of-``repeats`` FP32 GEMM throughput through numpy's BLAS (all threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm the BLAS thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def lstm_flops_per_token(manifest_model_config: dict) -> float:
    """Multiply-add FLOPs the recurrent layers spend per real token (gates: 4 x (input + hidden) x hidden).

    Embedding lookups and the classifier are negligible next to the recurrence,
    which dominates the model's time. An ensemble's members each run their own recurrence.
    """
    cfg = manifest_model_config
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_layers"])
    directions = 2 if cfg.get("bidirectional", True) else 1
    flops = 0.0
    for layer in range(layers):
        inputs = int(cfg["embed_dim"]) if layer == 0 else hidden * directions
        flops += directions * 2 * 4 * hidden * (inputs + hidden)
    return flops * int(cfg.get("members", 1))
