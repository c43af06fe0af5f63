"""``lstm-worker classify --explain K`` on the tiny real bundle, and a bundle exported before attributions existed."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from core.bundle import INPUT_IDS, INPUT_LENGTHS, OUTPUT_PROBABILITIES, load_bundle
from core.bundle_writer import write_bundle
from core.engine import InferenceEngine
from core.exit_codes import EXIT_CANNOT_START
from core.text import tokenize
from export.checkpoint import load_checkpoint
from worker.classify_command import classify
from worker.explanations import top_tokens


@pytest.fixture(scope="module")
def texts(tiny_checkpoint_dir: Path) -> list[str]:
    lines = (tiny_checkpoint_dir / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:30]] + ["nasa", "the the the"]


def invoke(bundle: Path, *args: str, stdin: str | None = None):
    result = CliRunner().invoke(classify, ["--model", str(bundle), *args], input=stdin, catch_exceptions=False)
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_each_label_lists_its_strongest_tokens_from_the_document(tiny_bundle_dir: Path, texts: list[str]) -> None:
    stdin = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    result, explained = invoke(tiny_bundle_dir, "--explain", "5", stdin=stdin)
    assert result.exit_code == 0, result.output
    plain = invoke(tiny_bundle_dir, stdin=stdin)[1]
    bundle = load_bundle(tiny_bundle_dir)
    engine = InferenceEngine(bundle, provider="cpu", threads=1, explain=True)
    ids = [engine.token_ids(t) for t in texts]
    _, attributions = engine.predict_explained(ids)
    for text, with_, without, doc_ids, doc_attributions in zip(texts, explained, plain, ids, attributions,
                                                                strict=True):
        assert {k: v for k, v in with_.items() if k != "explanation"} == without  # explaining changes no label
        tokens = [item["token"] for item in with_["explanation"]]
        weights = [item["weight"] for item in with_["explanation"]]
        assert len(tokens) <= 5 and len(set(tokens)) == len(tokens)
        assert all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
        assert set(tokens) <= set(tokenize(text, max_tokens=bundle.preprocessing.max_len)) & set(bundle.vocab.tokens)
        assert [(t, w) for t, w in top_tokens(doc_ids, doc_attributions, bundle.vocab, 5)] == \
            [(t, w) for t, w in zip(tokens, weights, strict=True)]
    assert sum(len(r["explanation"]) for r in explained) >= 3 * len(texts)  # most documents are explained
    assert [item["token"] for item in explained[-1]["explanation"]] in ([], ["the"])  # "the the the"
    engine.close()


class ProbabilitiesOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(ids, lengths)[0]


def plain_graph(checkpoint_dir: Path) -> bytes:
    """The graph lstm-export wrote before attributions: (the same, calibrated) probabilities only."""
    model = ProbabilitiesOnly(load_checkpoint(checkpoint_dir).explaining_model()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2])), buffer,
                          dynamo=False, opset_version=17, input_names=[INPUT_IDS, INPUT_LENGTHS],
                          output_names=[OUTPUT_PROBABILITIES],
                          dynamic_axes={INPUT_IDS: {0: "batch", 1: "sequence"}, INPUT_LENGTHS: {0: "batch"},
                                        OUTPUT_PROBABILITIES: {0: "batch"}})
    return buffer.getvalue()


def test_a_bundle_without_attributions_serves_but_cannot_explain(tiny_bundle_dir: Path, tiny_checkpoint_dir: Path,
                                                                 tmp_path: Path) -> None:
    new = load_bundle(tiny_bundle_dir)
    manifest = new.manifest
    old = write_bundle(tmp_path / "old", onnx_model=plain_graph(tiny_checkpoint_dir), vocab=new.vocab,
                       labels=list(new.labels), preprocessing=new.preprocessing, name="old", version="1",
                       opset=17, model_config=manifest["model"]["config"], self_test=new.self_test,
                       attributions=False)
    assert load_bundle(old).manifest["format_version"] == 2 and "attributions" not in load_bundle(old).manifest["model"]
    result, records = invoke(old, "the space shuttle")
    assert result.exit_code == 0 and records[0]["label"] and "explanation" not in records[0]
    result, records = invoke(old, "--explain", "3", "the space shuttle")
    assert result.exit_code == EXIT_CANNOT_START and records == []
    message = result.output.strip().splitlines()[-1]
    assert "--explain: old@1" in message and "exported without attributions; re-export it" in message
