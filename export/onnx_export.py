"""PyTorch → ONNX with the bundle's input/output names and dynamic batch and sequence axes.

The legacy TorchScript exporter (``dynamo=False``) is used on purpose: it
exports this model in well under a second, the dynamo exporter took 90 s.
The graph has two outputs, the probabilities and the attributions of the
predicted label (``training.attribution``); the latter run only when the input
``explain`` is fed true (``export.explain_graph``).
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch

from core.bundle import INPUT_IDS, INPUT_LENGTHS, OUTPUT_ATTRIBUTIONS, OUTPUT_PROBABILITIES
from export.exceptions import ExportError
from export.explain_graph import explain_on_request

DEFAULT_OPSET = 17
MIN_OPSET = 11  # GatherElements (the within-length reversal) needs opset 11; 11-21 export and pass the gates


def export_onnx(model: torch.nn.Module, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX model: ``input_ids`` int64 [batch, seq], ``lengths`` int64 [batch] (and the optional
    bool ``explain``) → probabilities [batch, classes], attributions [batch, seq] (empty unless explained)."""
    # Example of width 3 with unequal lengths so the tracer sees the general (padded) case.
    ids = torch.tensor([[2, 3, 4], [5, 6, 0]], dtype=torch.int64)
    lengths = torch.tensor([3, 2], dtype=torch.int64)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The legacy exporter warns about batch_first LSTMs and its own deprecation; both are harmless here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (ids, lengths),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_IDS, INPUT_LENGTHS],
                output_names=[OUTPUT_PROBABILITIES, OUTPUT_ATTRIBUTIONS],
                dynamic_axes={
                    INPUT_IDS: {0: "batch", 1: "sequence"},
                    INPUT_LENGTHS: {0: "batch"},
                    OUTPUT_PROBABILITIES: {0: "batch"},
                    OUTPUT_ATTRIBUTIONS: {0: "batch", 1: "sequence"},
                },
            )
    except Exception as exc:  # torch.onnx raises a variety of errors for unsupported opsets/ops
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {exc}") from exc
    graph = explain_on_request(onnx.load_from_string(buffer.getvalue()))
    try:
        onnx.checker.check_model(graph, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX graph does not pass onnx.checker: {exc}") from exc
    return graph.SerializeToString()


def graph_op_types(model_bytes: bytes) -> dict[str, int]:
    """How many nodes of each op type the graph has (shows what quantization changed)."""
    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model_bytes).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
