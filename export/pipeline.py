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
from typing import Any

import numpy as np
import onnxruntime
import torch

from core.bundle import DRIFT_REFERENCE_KEY, load_bundle, not_held_out_reasons
from core.bundle_writer import write_bundle
from core.engine import open_verified
from core.model_store import ModelStore, check_version_name
from core.verification import SelfTestError
from export import __version__, drift_reference, parity, selftest_inputs
from export.checkpoint import Checkpoint, load_checkpoint, load_validation
from export.exceptions import ExportError, ParityError
from export.gates import Gated, run_gates
from export.onnx_export import export_onnx, graph_op_types
from export.quantize import MAX_ACCURACY_DROP_POINTS
from export.reference import TorchReference, torch_reference


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


def run_export(config: ExportConfig, log: Callable[[str], None] = lambda _: None) -> Path:
    """Export, gate and publish the bundle at ``config.output``; raise :class:`ExportError` on refusal.

    Four stages: PyTorch's reference (``export/reference.py``), the ONNX graph, the gates
    (``export/gates.py``), then publishing: written, verified as a consumer loads it, renamed into place.
    """
    output = _output(config)
    _check_output(output)
    checkpoint = load_checkpoint(config.checkpoint)
    validation = load_validation(config.checkpoint, checkpoint.labels, config.parity_data)
    texts = [text for text, _ in validation]
    model = checkpoint.explaining_model()
    reference = torch_reference(model, checkpoint, texts, config.parity_docs, log)
    parity.after_reference_hook(model)
    log(f"exporting ONNX (opset {config.opset})")
    fp32_bytes = export_onnx(model, config.opset)
    fields = _bundle_fields(config, checkpoint)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    try:
        gold = [checkpoint.labels.index(label) for _, label in validation]
        gated = run_gates(config, reference, fp32_bytes, fields, scratch, texts, gold, log)
        _publish(config, checkpoint, [label for _, label in validation], reference, gated, fields, scratch,
                 output, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if config.store is not None:  # the first version of a store becomes CURRENT; later ones wait for promote
        ModelStore(output.parent).promote(output.name, only_if_empty=True, action="export", verify=lambda _: {
            "self_test_max_abs_diff": float(np.abs(gated.served - gated.expected).max()), "provider": "cpu"})
    return output


def _bundle_fields(config: ExportConfig, checkpoint: Checkpoint) -> dict[str, Any]:
    """What every bundle the export writes carries, the gated candidates' and the published one's."""
    return dict(
        vocab=checkpoint.vocab,
        labels=list(checkpoint.labels),
        preprocessing=checkpoint.preprocessing,
        name=config.name or checkpoint.directory.resolve().name,
        version=config.version,
        opset=config.opset,
        model_config=checkpoint.model_config.to_dict(),
        metrics=checkpoint.metrics,
        extra=_manifest_extra(config, checkpoint),
        calibration=checkpoint.calibration.to_dict(),
    )


def _publish(config: ExportConfig, checkpoint: Checkpoint, validation_labels: list[str], reference: TorchReference,
             gated: Gated, fields: dict[str, Any], scratch: Path, output: Path, log: Callable[[str], None]) -> None:
    """Write the gated graph with its drift reference, verify it as a consumer loads it, rename it into place."""
    reference_scores, reference_source = drift_reference.held_out_probabilities(
        gated.held_out, checkpoint, documents_given=config.parity_data is not None)
    log(f"drift reference: {reference_source}")
    extra = {**fields["extra"], DRIFT_REFERENCE_KEY: drift_reference.reference_for(
        reference_scores, checkpoint.labels, checkpoint.metrics, validation_labels),
        "drift_reference_scores": reference_source}
    final = write_bundle(scratch / "final", onnx_model=gated.model_bytes, quantization=config.quantize,
                         parity=gated.report, self_test=gated.self_test, self_test_report=selftest_inputs.coverage(
                             reference.test_inputs, gated.expected, checkpoint.labels,
                             checkpoint.preprocessing.max_len, reference.candidate_count),
                         **{**fields, "extra": extra})
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
