"""The export as one transaction: build in a scratch directory, gate, then rename into place.

The scratch directory is a sibling of the output (same filesystem, so the
final ``os.rename`` is atomic). Whatever fails, it is removed: a refused
export leaves no bundle behind, and a half-written one never exists under
the output name.

With ``--store`` the output is ``STORE/VERSION`` (a new, immutable version) and
the scratch directory lives in the store, hidden (a dot-name) from its listing.
Every published bundle carries a self-test (``export/selftest_inputs.py``),
which must pass on the written bundle through the same loader a worker uses.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from core.bundle import DRIFT_REFERENCE_KEY, MODEL_FILE, load_bundle, not_held_out_reasons
from core.bundle_writer import write_bundle
from core.engine import InferenceEngine, open_verified
from core.model_store import ModelStore, check_version_name
from core.selftest import SelfTest
from core.verification import SelfTestError
from core.vocab import pad_batch
from export import __version__, drift_reference, embedding_quant, parity, quantize, selftest_inputs
from export.checkpoint import Checkpoint, load_checkpoint, load_validation
from export.exceptions import ExportError, PaddingInvarianceError, ParityError
from export.onnx_export import export_onnx, graph_op_types
from export.quantize import MAX_ACCURACY_DROP_POINTS

# int8: ONNX Runtime quantize_dynamic (int8 LSTMs, faster, batch-dependent);
# int8-embedding: per-row int8 embedding table only (smaller, exact, not faster).
QUANTIZATIONS = ("int8", "int8-embedding")


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    output: Path | None
    quantize: str | None = None
    opset: int = 17
    name: str | None = None
    version: str = "1"
    parity_docs: int = 1024
    threads: int = 0
    # Held-out JSONL for the gates; None: the validation.jsonl next to the checkpoint.
    parity_data: Path | None = None
    # int8 only: publish even though scores depend on batch neighbours (recorded in the manifest).
    allow_batch_dependence: bool = False
    # A model store: the bundle becomes STORE/<version>; CURRENT is set only if the store has none yet.
    store: Path | None = None
    # --quantize only: the most validation accuracy, in points, the quantized graph may lose (one standard error added).
    max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS


def _output(config: ExportConfig) -> Path:
    if config.store is None:
        assert config.output is not None
        return config.output.absolute()
    store = config.store.absolute()
    if store.exists() and not store.is_dir():
        raise ExportError(f"--store {store} is not a directory")
    store.mkdir(exist_ok=True)  # its parent must exist, like --output's
    output = store / check_version_name(config.version)
    if output.exists():
        raise ExportError(f"version {config.version!r} already exists in the store {store}; versions are "
                          "immutable, export with a new --version")
    return output


def _run_batches(engine: InferenceEngine, inputs: list[list[int]], plan: list[tuple[int, int]]) -> np.ndarray:
    return np.concatenate([engine.run_padded(*pad_batch(inputs[start:end])) for start, end in plan])


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"{output} already exists and is not an empty directory; choose a new --output")
    if not output.parent.is_dir():
        raise ExportError(f"{output.parent} does not exist; create it or choose another --output")


def _manifest_extra(config: ExportConfig, checkpoint: Checkpoint) -> dict:
    return {
        "source": {"checkpoint": str(config.checkpoint.resolve()), **checkpoint.provenance},
        "exporter": {
            "tool": f"lstm-export {__version__}",
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }


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


def run_export(config: ExportConfig, log: Callable[[str], None] = lambda _: None) -> Path:
    """Export, gate and publish the bundle at ``config.output``; raise :class:`ExportError` on refusal."""
    output = _output(config)
    _check_output(output)
    checkpoint = load_checkpoint(config.checkpoint)
    validation = load_validation(config.checkpoint, checkpoint.labels, config.parity_data)
    model = checkpoint.explaining_model()
    max_len = checkpoint.preprocessing.max_len
    texts = [text for text, _ in validation]
    docs = parity.select_documents(texts, checkpoint.vocab, max_len, max(config.parity_docs, parity.MIN_PARITY_DOCS))
    plan = parity.batch_plan(len(docs.id_lists))
    log(f"PyTorch reference on {len(docs.id_lists)} validation documents")
    reference, reference_attributions = parity.torch_outputs(model, docs.id_lists, plan)
    candidates = selftest_inputs.candidates([checkpoint.vocab.token_ids(t, max_len) for t in texts], max_len)
    log(f"self-test: choosing inputs among {len(candidates)} shuffled validation token bags")
    chosen = selftest_inputs.select(candidates, parity.torch_probabilities(model, candidates, parity.batch_plan(
        len(candidates))), len(checkpoint.labels), max_len, parity.PARITY_TOLERANCE)
    test_inputs = [candidates[i] for i in chosen]
    test_plan = parity.batch_plan(len(test_inputs), selftest_inputs.SELF_TEST_BATCH_SIZES)
    test_torch = parity.torch_probabilities(model, test_inputs, test_plan)
    parity.after_reference_hook(model)
    log(f"exporting ONNX (opset {config.opset})")
    fp32_bytes = export_onnx(model, config.opset)
    name = config.name or checkpoint.directory.resolve().name
    common = dict(
        vocab=checkpoint.vocab,
        labels=list(checkpoint.labels),
        preprocessing=checkpoint.preprocessing,
        name=name,
        version=config.version,
        opset=config.opset,
        model_config=checkpoint.model_config.to_dict(),
        metrics=checkpoint.metrics,
        extra=_manifest_extra(config, checkpoint),
        calibration=checkpoint.calibration.to_dict(),
    )
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    try:
        # Gate the model exactly as it will be served: through a written, verified bundle and the engine.
        fp32_engine = InferenceEngine(load_bundle(write_bundle(scratch / "fp32", onnx_model=fp32_bytes, **common)),
                                      provider="cpu", threads=config.threads, explain=True)
        log("parity gate: ONNX Runtime vs PyTorch (probabilities and attributions)")
        report = {"onnx": parity.check_parity(fp32_engine, reference, docs, plan, reference_attributions)}
        log(f"  max |Δp| {report['onnx']['max_abs_diff']:.2e}, attributions "
            f"{report['onnx']['attributions']['max_abs_diff']:.2e} on {report['onnx']['documents_compared']} documents")
        gold = [checkpoint.labels.index(label) for _, label in validation]
        all_ids = [fp32_engine.token_ids(text) for text in texts]
        held_out = fp32_engine.predict_proba(all_ids)
        report["validation_accuracy"] = round(quantize.accuracy(held_out, gold), 6)
        final_bytes, final_engine = fp32_bytes, fp32_engine
        if config.quantize in QUANTIZATIONS:
            if config.quantize == "int8":
                log("quantizing to int8 (onnxruntime quantize_dynamic)")
                int8_path = scratch / "int8.onnx"
                ops = quantize.quantize_int8(scratch / "fp32" / MODEL_FILE, int8_path)
                final_bytes, details = int8_path.read_bytes(), {"method": quantize.DYNAMIC_METHOD}
            else:
                log("quantizing the embedding table to per-row int8")
                final_bytes, details = embedding_quant.quantize_embeddings(fp32_bytes)
                ops = graph_op_types(final_bytes)
            final_engine = InferenceEngine(
                load_bundle(write_bundle(scratch / "int8", onnx_model=final_bytes, quantization=config.quantize,
                                         **common)),
                provider="cpu", threads=config.threads, explain=True)
            report["quantization"] = {**quantize.check_int8(fp32_engine, final_engine, all_ids, gold, ops,
                                                            max_drop_points=config.max_accuracy_drop,
                                                            method=details["method"]), **details}
            report["validation_accuracy"] = report["quantization"]["int8_accuracy"]
        elif config.quantize is not None:
            raise ExportError(f"unknown quantization {config.quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
        log("padding-invariance gate")
        report["padding_invariance"] = _padding_gate(final_engine, docs.id_lists, config)
        # fp32: the self-test expects PyTorch's answers. A quantized graph has no PyTorch twin, so it
        # expects what ONNX Runtime on this CPU gave the published graph, in the same fixed batches.
        served = _run_batches(final_engine, test_inputs, test_plan)
        expected = test_torch if config.quantize is None else served
        self_test = SelfTest(tuple(tuple(x) for x in test_inputs), tuple(tuple(p) for p in expected.tolist()),
                             tuple(test_plan), parity.PARITY_TOLERANCE,
                             "pytorch" if config.quantize is None else "onnxruntime-cpu")
        report["passed"] = True
        if final_engine is not fp32_engine:  # the reference describes the graph that is published
            held_out = final_engine.predict_proba(all_ids)
        reference_scores, reference_source = drift_reference.held_out_probabilities(
            held_out, checkpoint, documents_given=config.parity_data is not None)
        log(f"drift reference: {reference_source}")
        common["extra"] = {**common["extra"], DRIFT_REFERENCE_KEY: drift_reference.reference_for(
            reference_scores, checkpoint.labels, checkpoint.metrics, [label for _, label in validation]),
            "drift_reference_scores": reference_source}
        final = write_bundle(scratch / "final", onnx_model=final_bytes, quantization=config.quantize, parity=report,
                             self_test=self_test, self_test_report=selftest_inputs.coverage(
                                 test_inputs, expected, checkpoint.labels, max_len, len(candidates)), **common)
        # The published bundle must verify, and pass its self-test, exactly as a consumer will load it.
        try:
            open_verified(load_bundle(final), provider="cpu", threads=config.threads, explain=True).close()
        except SelfTestError as exc:
            raise ParityError(f"self-test gate failed: {exc}; no bundle written",
                              {"self_test": exc.result.describe() if exc.result else str(exc)}) from None
        try:
            os.rename(final, output)  # atomic on one filesystem; replaces an empty output directory
        except OSError as exc:
            raise ExportError(f"cannot move the verified bundle to {output}: {exc.strerror}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if config.store is not None:  # the first version of a store becomes CURRENT; later ones wait for promote
        ModelStore(output.parent).promote(output.name, only_if_empty=True, action="export", verify=lambda _: {
            "self_test_max_abs_diff": float(np.abs(served - expected).max()), "provider": "cpu"})
    return output


def _not_held_out(manifest: dict) -> str:
    """Why the validation accuracy printed is not a held-out score, if it is not."""
    reasons = not_held_out_reasons(manifest)
    return f" (not held out: {'; '.join(reasons)})" if reasons else ""


def _calibration_line(manifest: dict) -> str:
    """What the graph applies to its probabilities, and lstm-train's test ECE before and after."""
    applied = manifest["model"].get("calibration") or {}
    fitted = (manifest.get("metrics") or {}).get("calibration") or {}
    if applied.get("method", "none") == "none":
        return f"none, scores are uncalibrated ({fitted.get('reason', 'the checkpoint records no calibration')})"
    line = f"{applied['method']}, temperature {applied['temperature']:.3f} (fitted out of fold)"
    test = fitted.get("test")
    if test:
        line += f"; test ECE {test['before']['ece']:.4f} -> {test['after']['ece']:.4f}"
    return line


def summary(bundle_dir: Path) -> str:
    bundle = load_bundle(bundle_dir)
    report = bundle.manifest["parity"]
    lines = [
        f"bundle {bundle.model_id} written to {bundle.path}",
        f"  parity: {report['onnx']['documents_compared']} documents, batch sizes {report['onnx']['batch_sizes']}, "
        f"max |Δp| {report['onnx']['max_abs_diff']:.2e}, argmax mismatches {report['onnx']['argmax_mismatches']}",
        f"  attributions (--explain): max |Δ| {report['onnx']['attributions']['max_abs_diff']:.2e} vs PyTorch "
        f"(largest attribution {report['onnx']['attributions']['largest_abs_attribution']:.2e})",
        f"  padding invariance: max |Δp| {report['padding_invariance']['max_abs_diff']:.2e}"
        + ("" if report["padding_invariance"]["passed"] else
           f" WARNING: NOT batch-invariant ({report['padding_invariance']['label_changes']} label changes), "
           "accepted with --allow-batch-dependence"),
        f"  validation accuracy: {report['validation_accuracy']:.4f}"
        + _not_held_out(bundle.manifest),
        f"  calibration: {_calibration_line(bundle.manifest)}",
    ]
    if bundle.self_test is not None:
        info = bundle.manifest["self_test"]
        buckets = sum(1 for b in info["length_buckets"] if b["inputs"])
        lines.append(
            f"  self-test: {info['inputs']} inputs (lengths {info['lengths']['min']}-{info['lengths']['max']}, "
            f"{buckets}/{len(info['length_buckets'])} length buckets, {len(info['labels_covered'])}/"
            f"{len(bundle.labels)} labels as argmax), expected by {info['reference']}, tolerance "
            f"{info['tolerance']:.0e}" + (f"; never the argmax: {', '.join(info['labels_never_argmax'])}"
                                          if info["labels_never_argmax"] else ""))
    if "quantization" in report:
        q = report["quantization"]
        lines.append(
            f"  int8: accuracy {q['int8_accuracy']:.4f} vs fp32 {q['fp32_accuracy']:.4f} "
            f"(drop {q['accuracy_drop_points']:.2f} points, +1 SE {q['accuracy_drop_upper_bound_points']:.2f}), "
            f"argmax agreement {q['argmax_agreement_with_fp32']:.1%}, speed x{q['speed']['int8_speedup']} vs fp32"
        )
    ops = graph_op_types(bundle.model_path.read_bytes())
    lstm_ops = {k: v for k, v in ops.items() if "LSTM" in k}
    lines.append(f"  graph: {sum(ops.values())} nodes, {lstm_ops}")
    return "\n".join(lines)
