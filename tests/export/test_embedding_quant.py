"""``--quantize int8-embedding``: per-row int8 embedding, float LSTM; smaller, still exactly batch-invariant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from core.bundle import load_bundle
from core.engine import InferenceEngine
from export.cli import main as export_main
from export.embedding_quant import quantize_rows


def test_quantize_rows_keeps_each_row_within_half_a_step_and_zero_rows_exact() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((300, 16)).astype(np.float32)
    table[0] = 0.0  # the padding row
    table[7] *= 100.0  # an outlier row (LSA gives frequent words rows like this) must not hurt the others
    q, scale = quantize_rows(table)
    assert q.dtype == np.int8 and scale.shape == (300, 1)
    assert not q[0].any()
    error = np.abs(q.astype(np.float32) * scale - table)
    assert (error <= scale / 2 + 1e-6).all()
    assert error[8:].max() < 0.02  # per-row scales: the outlier row's scale does not coarsen its neighbours


def test_int8_embedding_export_is_smaller_exact_and_accurate(tiny_checkpoint_dir: Path, tiny_bundle_dir: Path,
                                                              tmp_path: Path) -> None:
    output = tmp_path / "int8e"
    result = CliRunner().invoke(export_main, ["--checkpoint", str(tiny_checkpoint_dir), "--output", str(output),
                                              "--quantize", "int8-embedding"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bundle, fp32 = load_bundle(output), load_bundle(tiny_bundle_dir)
    assert bundle.manifest["model"]["quantization"] == "int8-embedding"
    report = bundle.manifest["parity"]
    # No --allow-batch-dependence needed: the LSTMs stay float, so the padding gate passes at 1e-5.
    assert report["padding_invariance"]["passed"] and report["padding_invariance"]["max_abs_diff"] <= 1e-5
    assert report["quantization"]["passed"] and report["quantization"]["tensors"]
    graph = onnx.load(str(bundle.model_path)).graph
    int8_tables = [i for i in graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 2]
    assert [list(t.dims) for t in int8_tables] == [[len(bundle.vocab), bundle.manifest["model"]["config"]["embed_dim"]]]
    assert not any(i.data_type == TensorProto.FLOAT and list(i.dims) == list(int8_tables[0].dims)
                   for i in graph.initializer)
    assert {n.op_type for n in graph.node} >= {"LSTM", "Cast", "Mul"}
    assert numpy_helper.to_array(int8_tables[0]).any()
    assert bundle.model_path.stat().st_size < fp32.model_path.stat().st_size / 2
    # Independently of the report: both bundles on the whole validation split.
    rows = [json.loads(line) for line in (tiny_checkpoint_dir / "validation.jsonl").read_text().splitlines() if line]
    accuracies = []
    for candidate in (fp32, bundle):
        engine = InferenceEngine(candidate, provider="cpu")
        predicted = engine.predict_proba([engine.token_ids(r["text"]) for r in rows]).argmax(axis=1)
        accuracies.append(np.mean([engine.labels[p] == r["label"] for p, r in zip(predicted, rows, strict=True)]))
    assert abs(accuracies[0] - accuracies[1]) * 100 <= 1.0
