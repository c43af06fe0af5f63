"""``--quantize int8``: dynamic int8 quantization with ONNX Runtime, gated on accuracy.

``quantize_dynamic`` turns each ONNX ``LSTM`` into ``DynamicQuantizeLSTM``
(int8 weights, activations quantized at run time) and the classifier's
``Gemm`` into ``MatMulInteger``. Argmax parity with PyTorch is not required
for int8; the gate is validation accuracy within ``max_drop`` points of the
fp32 model (point estimate plus one standard error of the paired difference),
and the report states the measured speed ratio.

ONNX Runtime's ``DynamicQuantizeLSTM`` quantizes the LSTM input with one
scale for the whole batch tensor, so an int8 document's scores depend on its
batch neighbours (measured on the 20NG small model: up to 0.26 in probability,
with label changes, when a short document is batched with 63 long ones). The
padding-invariance gate therefore refuses int8 bundles unless the user passes
``--allow-batch-dependence``; the manifest then records the measured failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.engine import InferenceEngine
from export.exceptions import QuantizationError
from export.onnx_export import graph_op_types

DYNAMIC_METHOD = "onnxruntime.quantization.quantize_dynamic (QInt8 weights, dynamic activations)"
MAX_ACCURACY_DROP_POINTS = 1.0
SPEED_REPEATS = 3


def quantize_int8(fp32_path: Path, int8_path: Path) -> dict:
    """Write the int8 model; return which op types it has (proof that the LSTMs were quantized)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy import, only when asked

    # quantize_dynamic logs a "consider pre-processing" hint at WARNING on every call; it does not apply here.
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime quantize_dynamic failed: {exc}") from exc
    finally:
        quiet.setLevel(level)
    ops = graph_op_types(int8_path.read_bytes())
    if not ops.get("DynamicQuantizeLSTM"):
        raise QuantizationError(f"quantize_dynamic left the LSTMs in float (op types: {ops}); refusing a no-op int8")
    return ops


def accuracy(probabilities: np.ndarray, gold: Sequence[int]) -> float:
    return float((probabilities.argmax(axis=1) == np.asarray(gold)).mean())


def paired_standard_error_points(pred32: np.ndarray, pred8: np.ndarray, gold: Sequence[int]) -> float:
    """Standard error (in points) of the paired accuracy difference, from the documents the models disagree on.

    The gate compares ``drop + 1 SE`` with the limit: on ~1,000 validation
    documents the point estimate alone is too noisy (the 20NG small model lost
    0.62 points on validation but 1.74 on the test split).
    """
    gold = np.asarray(gold)
    only32 = float(((pred32 == gold) & (pred8 != gold)).sum())
    only8 = float(((pred8 == gold) & (pred32 != gold)).sum())
    n = len(gold)
    return float(np.sqrt(max(only32 + only8 - (only32 - only8) ** 2 / n, 0.0)) / n * 100)


def best_time(engine: InferenceEngine, id_lists: Sequence[Sequence[int]], repeats: int = SPEED_REPEATS) -> float:
    """Best wall time of ``repeats`` full passes (the minimum is the least noisy on a shared machine)."""
    engine.predict_proba(id_lists[:64])  # warm-up: ORT allocates on the first run
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.predict_proba(id_lists)
        times.append(time.perf_counter() - start)
    return min(times)


def check_int8(
    fp32: InferenceEngine,
    int8: InferenceEngine,
    id_lists: Sequence[Sequence[int]],
    gold: Sequence[int],
    op_types: dict,
    max_drop_points: float = MAX_ACCURACY_DROP_POINTS,
    speed_docs: int = 1024,
    method: str = DYNAMIC_METHOD,
) -> dict:
    """Accuracy gate (fp32 vs int8 on the validation documents) plus a speed measurement."""
    p32, p8 = fp32.predict_proba(id_lists), int8.predict_proba(id_lists)
    acc32, acc8 = accuracy(p32, gold), accuracy(p8, gold)
    drop = (acc32 - acc8) * 100
    bound = drop + paired_standard_error_points(p32.argmax(1), p8.argmax(1), gold)
    sample = list(id_lists[:speed_docs])
    t32, t8 = best_time(fp32, sample), best_time(int8, sample)
    report = {
        "passed": False,
        "method": method,
        "op_types": {k: v for k, v in op_types.items() if k in
                     ("DynamicQuantizeLSTM", "LSTM", "MatMulInteger", "DynamicQuantizeLinear", "Gemm", "MatMul",
                      "Gather", "Cast", "Mul")},
        "documents": len(id_lists),
        "fp32_accuracy": round(acc32, 6),
        "int8_accuracy": round(acc8, 6),
        "accuracy_drop_points": round(drop, 4),
        "accuracy_drop_upper_bound_points": round(bound, 4),
        "max_accuracy_drop_points": max_drop_points,
        "argmax_agreement_with_fp32": round(float((p32.argmax(1) == p8.argmax(1)).mean()), 6),
        "max_abs_diff_vs_fp32": float(np.abs(p32 - p8).max()),
        "speed": {
            "documents": len(sample),
            "fp32_seconds": round(t32, 4),
            "int8_seconds": round(t8, 4),
            "int8_speedup": round(t32 / t8, 3) if t8 > 0 else None,
        },
    }
    if bound > max_drop_points:
        raise QuantizationError(
            f"int8 accuracy gate failed: validation accuracy {acc8:.4f} vs fp32 {acc32:.4f}, drop {drop:.2f} "
            f"points (+1 standard error: {bound:.2f}) > {max_drop_points}; export without --quantize (or accept "
            "a larger loss with --max-accuracy-drop)",
            report,
        )
    report["passed"] = True
    return report
