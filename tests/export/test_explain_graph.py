"""The exported attributions on small models through real ONNX Runtime: gated, faithful to PyTorch, padding-safe.

Every model kind the exporter writes (pooling, word shortcut, ensemble, TF-IDF branch) and both quantizations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from core.bundle import OUTPUT_ATTRIBUTIONS, OUTPUT_PROBABILITIES, Preprocessing, load_bundle
from core.bundle_writer import write_bundle
from core.engine import InferenceEngine
from core.exceptions import EngineError
from core.verification import well_formed
from core.vocab import Vocabulary, pad_batch
from export import embedding_quant, quantize
from export.explain_graph import _needed_for
from export.onnx_export import export_onnx
from training.attribution import ExplainingModel
from training.model import ModelConfig, build_model

VOCAB = Vocabulary(("<pad>", "<unk>", *(f"w{i}" for i in range(298))))
CONFIGS = [dict(pooling="max_mean"), dict(pooling="attention", word_shortcut=True), dict(pooling="mean"),
           dict(pooling="max", members=2), dict(pooling="max_mean", members=2, bow_weight=0.3),
           dict(pooling="max_mean", bow_weight=0.3, bow_bigram_buckets=32)]


def explaining_model(**overrides) -> ExplainingModel:
    torch.manual_seed(1)
    classifier = build_model(ModelConfig(vocab_size=len(VOCAB), num_classes=3, embed_dim=8, hidden_size=6,
                                         **overrides))
    if overrides.get("bow_weight"):
        with torch.no_grad():
            classifier.bag_of_words.idf.uniform_(0.5, 3.0)
            classifier.bag_of_words.weight.normal_()
    return ExplainingModel(classifier).eval()


def bundle(tmp_path: Path, onnx_model: bytes, **kwargs) -> Path:
    return write_bundle(tmp_path / "bundle", onnx_model=onnx_model, vocab=VOCAB, labels=["a", "b", "c"],
                        preprocessing=Preprocessing(max_len=40), name="small", version="1", opset=17, **kwargs)


def documents(count: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, len(VOCAB), size=int(n)).tolist() for n in rng.integers(1, 40, size=count)]


def torch_outputs(model: ExplainingModel, docs: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
    ids, lengths = pad_batch(docs)
    with torch.no_grad():
        p, a = model(torch.from_numpy(ids), torch.from_numpy(lengths))
    return p.numpy(), [row[:n] for row, n in zip(a.numpy(), lengths, strict=True)]


@pytest.mark.parametrize("overrides", CONFIGS, ids=str)
def test_onnx_runtime_explains_like_pytorch_in_any_batch(overrides: dict, tmp_path: Path) -> None:
    model = explaining_model(**overrides)
    engine = InferenceEngine(load_bundle(bundle(tmp_path, export_onnx(model))), provider="cpu", threads=2,
                             rows_per_call=7, explain=True)
    docs = documents()
    expected_p, expected_a = torch_outputs(model, docs)
    p, attributions = engine.predict_explained(docs)  # sorted, sub-batched, two runners: the serving path
    np.testing.assert_allclose(p, expected_p, atol=1e-5)
    assert [len(a) for a in attributions] == [len(d) for d in docs]
    assert max(float(np.abs(a - b).max()) for a, b in zip(attributions, expected_a, strict=True)) < 1e-5
    assert max(float(np.abs(a).max()) for a in attributions) > 1e-3  # not all zero
    np.testing.assert_array_equal(engine.predict_proba(docs), p)  # the plain path answers the same
    # Padding: a short document alone and inside a batch of long ones.
    short, longs = docs[0][:3], [d for d in docs if len(d) > 30][:5]
    alone = engine.run_explained(*pad_batch([short]))[1][0]
    inside = engine.run_explained(*pad_batch([*longs, short]))[1][-1, :3]
    np.testing.assert_allclose(inside, alone, atol=1e-6)
    engine.close()


def test_plain_calls_never_run_the_attribution_nodes(tmp_path: Path) -> None:
    graph = onnx.load_from_string(export_onnx(explaining_model(pooling="max_mean", members=2, bow_weight=0.3)))
    gate = [node for node in graph.graph.node if node.op_type == "If"]
    assert len(gate) == 1 and list(gate[0].output) == [OUTPUT_ATTRIBUTIONS]
    # Outside the gate, a node is needed for the probabilities or computed from weights alone (folded into an
    # initializer when ONNX Runtime loads the graph): a plain call runs nothing more than before.
    needed = _needed_for(graph.graph, OUTPUT_PROBABILITIES)
    constant = {init.name for init in graph.graph.initializer} - {"explain"}
    for index, node in enumerate(graph.graph.node):
        if node.op_type != "If" and index not in needed:
            assert all(name in constant for name in node.input), (node.op_type, list(node.input))
            constant.update(node.output)
    assert len(graph.graph.node) - len(needed) > 1  # hoisted weight slices beside the gate
    engine = InferenceEngine(load_bundle(bundle(tmp_path, graph.SerializeToString())), provider="cpu", threads=1)
    ids, lengths = pad_batch(documents(5))
    probabilities, skipped = engine.session.run(None, {"input_ids": ids, "lengths": lengths})
    assert skipped.shape == (0, 0)  # the constant of the untaken branch
    np.testing.assert_array_equal(probabilities, engine.run_padded(ids, lengths))


@pytest.mark.parametrize("method", ["int8", "int8-embedding"])
def test_quantized_graphs_keep_the_attributions(method: str, tmp_path: Path) -> None:
    model = explaining_model(pooling="max_mean", bow_weight=0.3)
    fp32 = export_onnx(model)
    if method == "int8":
        (tmp_path / "fp32.onnx").write_bytes(fp32)
        quantize.quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
        quantized = (tmp_path / "int8.onnx").read_bytes()
    else:
        quantized = embedding_quant.quantize_embeddings(fp32)[0]
    engine = InferenceEngine(load_bundle(bundle(tmp_path, quantized, quantization=method)), provider="cpu",
                             threads=1, explain=True)
    docs = documents(12)
    ids, lengths = pad_batch(docs)
    probabilities, attributions = engine.run_explained(ids, lengths)
    assert well_formed(attributions, ids, lengths)
    expected_p, expected_a = torch_outputs(model, docs)
    # Quantized, so only close: the same predicted labels, attributions of the same sign and size.
    assert (probabilities.argmax(1) == expected_p.argmax(1)).mean() >= 0.9
    assert np.corrcoef(np.concatenate(expected_a), attributions[ids > 0])[0, 1] > 0.9


def test_an_engine_refuses_to_explain_with_a_bundle_exported_without_attributions(tmp_path: Path) -> None:
    model = explaining_model(pooling="max_mean")
    old = bundle(tmp_path, export_onnx(model), attributions=False)
    assert load_bundle(old).attribution_names is None
    InferenceEngine(load_bundle(old), provider="cpu", threads=1).close()  # plain scoring still serves
    with pytest.raises(EngineError, match="exported without attributions; re-export it"):
        InferenceEngine(load_bundle(old), provider="cpu", threads=1, explain=True)


def test_a_label_certain_in_float32_is_explained_by_onnx_runtime_too(tmp_path: Path) -> None:
    model = explaining_model(pooling="max_mean", members=2, bow_weight=0.3)
    with torch.no_grad():  # every component sure of class 0: its probability rounds to 1.0 in float32
        for member in model.classifier.lstm.members:
            member.classifier.bias[0] += 40.0
        model.classifier.bag_of_words.bias[0] += 40.0 / model.classifier.config.bow_sharpness
    engine = InferenceEngine(load_bundle(bundle(tmp_path, export_onnx(model))), provider="cpu", threads=2,
                             explain=True)
    docs = documents(count=8, seed=3)
    expected_p, expected_a = torch_outputs(model, docs)
    p, attributions = engine.predict_explained(docs)
    assert (p[:, 0] == 1.0).all() and (expected_p[:, 0] == 1.0).all()
    for got, expected in zip(attributions, expected_a, strict=True):
        assert np.abs(got).max() > 1e-2  # words still move the label's log-odds
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    engine.close()
