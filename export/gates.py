"""The export's gates: the graph is scored as it will be served, through a written bundle and the engine.

ONNX Runtime against PyTorch (probabilities and attributions), the quantized graph against the fp32 one,
padding invariance, and the self-test's expected answers. Every engine opened here is closed here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.bundle import MODEL_FILE, load_bundle
from core.bundle_writer import write_bundle
from core.engine import InferenceEngine
from core.selftest import SelfTest
from core.vocab import pad_batch
from export import embedding_quant, parity, quantize
from export.exceptions import ExportError, PaddingInvarianceError
from export.onnx_export import graph_op_types
from export.reference import TorchReference

if TYPE_CHECKING:
    from export.pipeline import ExportConfig

# int8: ONNX Runtime quantize_dynamic (int8 LSTMs, faster, batch-dependent);
# int8-embedding: per-row int8 embedding table only (smaller, exact, not faster).
QUANTIZATIONS = ("int8", "int8-embedding")


@dataclass(frozen=True)
class Gated:
    """A graph that passed every gate, with what the bundle records about it."""

    model_bytes: bytes
    report: dict
    # The published graph's probabilities on every validation document (the drift reference's source).
    held_out: np.ndarray
    self_test: SelfTest
    # The self-test's expected answers, and what ONNX Runtime here gave the published graph on its inputs.
    expected: np.ndarray
    served: np.ndarray


def run_gates(config: ExportConfig, reference: TorchReference, fp32_bytes: bytes, bundle_fields: dict[str, Any],
              scratch: Path, texts: Sequence[str], gold: Sequence[int], log: Callable[[str], None]) -> Gated:
    """Gate the fp32 graph and, with ``--quantize``, the quantized one; raise ExportError on refusal."""
    if config.quantize is not None and config.quantize not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {config.quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    with ExitStack() as engines:
        def engine(folder: str, model_bytes: bytes, **quantization: Any) -> InferenceEngine:
            bundle = write_bundle(scratch / folder, onnx_model=model_bytes, **quantization, **bundle_fields)
            return engines.enter_context(closing(InferenceEngine(load_bundle(bundle), provider="cpu",
                                                                 threads=config.threads, explain=True)))

        fp32_engine = engine("fp32", fp32_bytes)
        log("parity gate: ONNX Runtime vs PyTorch (probabilities and attributions)")
        report = {"onnx": parity.check_parity(fp32_engine, reference.probabilities, reference.documents,
                                              reference.plan, reference.attributions)}
        log(f"  max |Δp| {report['onnx']['max_abs_diff']:.2e}, attributions "
            f"{report['onnx']['attributions']['max_abs_diff']:.2e} on {report['onnx']['documents_compared']} documents")
        all_ids = [fp32_engine.token_ids(text) for text in texts]
        held_out = fp32_engine.predict_proba(all_ids)
        report["validation_accuracy"] = round(quantize.accuracy(held_out, gold), 6)
        final_bytes, final_engine = fp32_bytes, fp32_engine
        if config.quantize is not None:
            if config.quantize == "int8":
                log("quantizing to int8 (onnxruntime quantize_dynamic)")
                int8_path = scratch / "int8.onnx"
                ops = quantize.quantize_int8(scratch / "fp32" / MODEL_FILE, int8_path)
                final_bytes, details = int8_path.read_bytes(), {"method": quantize.DYNAMIC_METHOD}
            else:
                log("quantizing the embedding table to per-row int8")
                final_bytes, details = embedding_quant.quantize_embeddings(fp32_bytes)
                ops = graph_op_types(final_bytes)
            final_engine = engine("int8", final_bytes, quantization=config.quantize)
            report["quantization"] = {**quantize.check_int8(fp32_engine, final_engine, all_ids, gold, ops,
                                                            max_drop_points=config.max_accuracy_drop,
                                                            method=details["method"]), **details}
            report["validation_accuracy"] = report["quantization"]["int8_accuracy"]
            held_out = final_engine.predict_proba(all_ids)  # the drift reference describes the published graph
        log("padding-invariance gate")
        report["padding_invariance"] = _padding_gate(final_engine, reference.documents.id_lists, config)
        # fp32: the self-test expects PyTorch's answers. A quantized graph has no PyTorch twin, so it
        # expects what ONNX Runtime on this CPU gave the published graph, in the same fixed batches.
        served = np.concatenate([final_engine.run_padded(*pad_batch(reference.test_inputs[start:end]))
                                 for start, end in reference.test_plan])
    expected = reference.test_probabilities if config.quantize is None else served
    self_test = SelfTest(tuple(tuple(x) for x in reference.test_inputs), tuple(tuple(p) for p in expected.tolist()),
                         tuple(reference.test_plan), parity.PARITY_TOLERANCE,
                         "pytorch" if config.quantize is None else "onnxruntime-cpu")
    report["passed"] = True
    return Gated(final_bytes, report, held_out, self_test, expected, served)


def _padding_gate(engine: InferenceEngine, id_lists: list[list[int]], config: ExportConfig) -> dict:
    """The padding-invariance gate; for int8 the user may accept (not hide) a failure."""
    try:
        return parity.check_padding_invariance(engine, id_lists)
    except PaddingInvarianceError as exc:
        if config.quantize is None or not config.allow_batch_dependence:
            if config.quantize == "int8":
                exc.args = (f"{exc.args[0]}. Dynamic int8 quantizes the LSTM input with one scale per batch, so "
                            "scores depend on batch neighbours; serve the fp32 bundle, or pass "
                            "--allow-batch-dependence to publish it anyway",)
            raise
        return {**exc.report, "accepted": "--allow-batch-dependence"}
