"""Attributions only when asked: the nodes that compute them run inside an ``If`` on the input ``explain``.

ONNX Runtime runs every node of a graph whatever outputs a caller fetches, so a
graph with the attributions as a plain second output would make every
prediction pay for them. Here the nodes that only the ``attributions`` output
needs move into the ``then`` branch of an ``If`` node; ``explain`` is a boolean
input whose initializer (an overridable default) is false. A caller that feeds
only ids and lengths, as every worker did before, gets the probabilities from
the same nodes as before and an empty ``attributions``; feeding ``explain=True``
runs the branch. The probabilities never depend on ``explain``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.bundle import INPUT_EXPLAIN, OUTPUT_ATTRIBUTIONS, OUTPUT_PROBABILITIES
from export.exceptions import ExportError


def _needed_for(graph: onnx.GraphProto, output: str) -> set[int]:
    """Indices of the nodes ``output`` depends on (the graph's nodes are topologically sorted)."""
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    needed: set[int] = set()
    pending = [output]
    while pending:
        index = producer.get(pending.pop())
        if index is None or index in needed:
            continue  # a graph input or initializer, or already visited
        needed.add(index)
        node = graph.node[index]
        pending.extend(name for name in node.input if name)
        pending.extend(_outer_names(node))
    return needed


def _constant_nodes(graph: onnx.GraphProto) -> set[int]:
    """Indices of the nodes computed from initializers alone (``explain`` excepted): ONNX Runtime folds those
    into initializers when it loads the graph, in the main graph (not inside a branch)."""
    constant = {init.name for init in graph.initializer} - {INPUT_EXPLAIN}
    indices = set()
    for index, node in enumerate(graph.node):
        if all(name in constant for name in node.input if name) and not _outer_names(node):
            constant.update(node.output)
            indices.add(index)
    return indices


def _outer_names(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs (if any) read from the enclosing scope."""
    names = []
    for attribute in node.attribute:
        for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
            for inner in sub.node:
                names.extend(name for name in inner.input if name)
                names.extend(_outer_names(inner))
    return names


def explain_on_request(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``model`` (outputs probabilities and attributions) so the attributions run only on request."""
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if outputs != [OUTPUT_PROBABILITIES, OUTPUT_ATTRIBUTIONS]:
        raise ExportError(f"expected the outputs {OUTPUT_PROBABILITIES}, {OUTPUT_ATTRIBUTIONS}; got {outputs}")
    # Constant nodes the attributions need (weight slices, transposes) stay outside the branch, where they are
    # folded at load time instead of running on every explained call.
    main = _needed_for(graph, OUTPUT_PROBABILITIES) | (_needed_for(graph, OUTPUT_ATTRIBUTIONS) & _constant_nodes(graph))
    explained = _needed_for(graph, OUTPUT_ATTRIBUTIONS) - main
    if not explained:
        raise ExportError("the attributions share every node with the probabilities; nothing to gate")
    inside = f"{OUTPUT_ATTRIBUTIONS}.explained"
    branch_nodes = []
    for index, node in enumerate(graph.node):
        if index in explained:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for position, name in enumerate(copy.output):
                if name == OUTPUT_ATTRIBUTIONS:  # a value name must be unique across the graph and its branches
                    copy.output[position] = inside
            branch_nodes.append(copy)
    then_branch = helper.make_graph(branch_nodes, "explain", [], [
        helper.make_tensor_value_info(inside, TensorProto.FLOAT, None)])
    skipped = f"{OUTPUT_ATTRIBUTIONS}.skipped"
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], [skipped], value=numpy_helper.from_array(np.zeros((0, 0), np.float32)))],
        "no_explain", [], [helper.make_tensor_value_info(skipped, TensorProto.FLOAT, None)])
    kept = [node for index, node in enumerate(graph.node) if index in main]
    gate = helper.make_node("If", [INPUT_EXPLAIN], [OUTPUT_ATTRIBUTIONS], name="explain_on_request",
                            then_branch=then_branch, else_branch=else_branch)
    del graph.node[:]
    graph.node.extend([*kept, gate])
    graph.input.append(helper.make_tensor_value_info(INPUT_EXPLAIN, TensorProto.BOOL, []))
    graph.initializer.append(numpy_helper.from_array(np.array(False), INPUT_EXPLAIN))  # the overridable default
    del graph.output[1]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_ATTRIBUTIONS, TensorProto.FLOAT, ["batch", "sequence"]))
    return model
