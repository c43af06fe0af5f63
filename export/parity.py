"""The gates an exported model must pass before a bundle exists.

1. Parity: PyTorch and ONNX Runtime score the same real validation documents
   (mixed lengths: a 1-token text, texts longer than max length) in batches of
   mixed sizes; any probability off by more than ``tolerance`` or any argmax
   difference refuses the export. Optimum only warns here; we refuse, because
   a silently different model in production is worse than no model.
2. Padding invariance: a short document scored alone must score the same
   inside a batch padded to much longer documents, on ONNX Runtime, since the
   worker batches whatever arrives together.

Both gates cover the attributions (``--explain``) too, with the same documents
and batches: they are probabilities' worth (a first-order change of the predicted
label's probability), so they get the probabilities' tolerances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.engine import InferenceEngine
from core.text import tokenize
from core.vocab import Vocabulary, pad_batch
from export.exceptions import PaddingInvarianceError, ParityError

PARITY_TOLERANCE = 1e-4
INVARIANCE_TOLERANCE = 1e-5
MIN_PARITY_DOCS = 512
# Unsorted, uneven batch sizes: batches mix lengths, so most rows carry padding.
BATCH_SIZES = (1, 7, 64, 2, 33, 128, 3, 16, 100, 5)
INVARIANCE_COMPANIONS = 63
INVARIANCE_PROBES = 8
PARITY_SAMPLE_SEED = 0


def after_reference_hook(model: torch.nn.Module) -> None:
    """Called after the PyTorch reference is computed and before ONNX export. Does nothing.

    Tests replace it to perturb the weights, i.e. to export a model that really
    differs from the reference, and check that the gate refuses it.
    """


@dataclass(frozen=True)
class ParityDocuments:
    texts: list[str]
    id_lists: list[list[int]]
    one_token: int
    truncated: int


def select_documents(texts: Sequence[str], vocab: Vocabulary, max_len: int, count: int) -> ParityDocuments:
    """Up to ``count`` real documents plus guaranteed edge cases (1 token, longer than ``max_len``).

    Drawn at random (a fixed seed, so a rerun compares the same documents) from the whole split, not
    from its head: ``validation.jsonl`` is written in class order, and its first documents would all
    come from the first classes. A validation split smaller than :data:`MIN_PARITY_DOCS` is topped up
    with prefixes of its own documents (still real text, new lengths).
    """
    order = np.random.default_rng(PARITY_SAMPLE_SEED).permutation(len(texts))
    texts = [texts[i] for i in order]
    chosen = list(texts[: max(count - 2, 1)])
    first_words = next((tokenize(t, vocab.lowercase, 1) for t in texts if tokenize(t, vocab.lowercase, 1)), ["a"])
    chosen.append(first_words[0])  # a 1-token document
    chosen.append("\n".join(texts[:8]))  # longer than max_len for any sane max_len
    cut = 1
    while len(chosen) < MIN_PARITY_DOCS:
        source = texts[len(chosen) % len(texts)]
        words = source.split()
        chosen.append(" ".join(words[: max(1, len(words) * cut // 7)]))
        cut = cut % 6 + 1
    id_lists = [vocab.token_ids(t, max_len) for t in chosen]
    one_token = sum(1 for ids in id_lists if len(ids) == 1)
    truncated = sum(1 for t in chosen if len(tokenize(t, vocab.lowercase, max_len + 1)) > max_len)
    return ParityDocuments(chosen, id_lists, one_token, truncated)


def batch_plan(n: int, sizes: Sequence[int] = BATCH_SIZES) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` slices cycling through ``sizes``, in document order."""
    plan, start, turn = [], 0, 0
    while start < n:
        end = min(n, start + sizes[turn % len(sizes)])
        plan.append((start, end))
        start, turn = end, turn + 1
    return plan


def torch_outputs(model: torch.nn.Module, id_lists: Sequence[Sequence[int]],
                  plan) -> tuple[np.ndarray, list[np.ndarray]]:
    """PyTorch's probabilities ``[n, classes]`` and each document's attributions (one per token)."""
    probabilities, attributions = [], []
    with torch.inference_mode():
        for start, end in plan:
            ids, lengths = pad_batch(id_lists[start:end])
            p, a = model(torch.from_numpy(ids), torch.from_numpy(lengths))
            probabilities.append(p.numpy())
            attributions += [row[:n] for row, n in zip(a.numpy().astype(np.float32), lengths, strict=True)]
    return np.concatenate(probabilities).astype(np.float32), attributions


def torch_probabilities(model: torch.nn.Module, id_lists: Sequence[Sequence[int]], plan) -> np.ndarray:
    return torch_outputs(model, id_lists, plan)[0]


def onnx_outputs(engine: InferenceEngine, id_lists: Sequence[Sequence[int]],
                 plan) -> tuple[np.ndarray, list[np.ndarray]]:
    """ONNX Runtime's answers in exactly the batches of ``plan`` (an explaining engine)."""
    probabilities, attributions = [], []
    for start, end in plan:
        ids, lengths = pad_batch(id_lists[start:end])
        p, a = engine.run_explained(ids, lengths)
        probabilities.append(p)
        attributions += [row[:n] for row, n in zip(a, lengths, strict=True)]
    return np.concatenate(probabilities), attributions


def largest_difference(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))


def check_parity(
    engine: InferenceEngine,
    reference: np.ndarray,
    docs: ParityDocuments,
    plan: list[tuple[int, int]],
    reference_attributions: list[np.ndarray],
    tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """Compare ONNX Runtime (an explaining engine) with the PyTorch ``reference``; raise :class:`ParityError`."""
    batched, batched_attributions = onnx_outputs(engine, docs.id_lists, plan)
    serving, serving_attributions = engine.predict_explained(docs.id_lists)  # the worker's path: sub-batches
    diffs = {name: np.abs(out - reference) for name, out in (("batched", batched), ("serving", serving))}
    mismatches = {name: int((out.argmax(1) != reference.argmax(1)).sum()) for name, out in
                  (("batched", batched), ("serving", serving))}
    attribution_diffs = {name: largest_difference(out, reference_attributions) for name, out in
                         (("batched", batched_attributions), ("serving", serving_attributions))}
    worst = int(diffs["batched"].max(axis=1).argmax())
    lengths = [len(x) for x in docs.id_lists]
    report = {
        "passed": False,
        "tolerance": tolerance,
        "documents_compared": len(docs.id_lists),
        "batch_sizes": sorted({e - s for s, e in plan}),
        "batches": len(plan),
        "token_lengths": {"min": min(lengths), "max": max(lengths), "mean": round(float(np.mean(lengths)), 1)},
        "one_token_documents": docs.one_token,
        "documents_longer_than_max_len": docs.truncated,
        "max_abs_diff": float(diffs["batched"].max()),
        "max_abs_diff_serving_path": float(diffs["serving"].max()),
        "argmax_mismatches": mismatches["batched"],
        "argmax_mismatches_serving_path": mismatches["serving"],
        "worst_document_index": worst,
        "attributions": {
            "tolerance": tolerance,
            "max_abs_diff": attribution_diffs["batched"],
            "max_abs_diff_serving_path": attribution_diffs["serving"],
            "largest_abs_attribution": max(float(np.abs(a).max()) for a in reference_attributions),
        },
    }
    failed = [
        f"{name}: max |Δp| {diffs[name].max():.3g} > {tolerance:g}" for name in diffs if diffs[name].max() > tolerance
    ] + [f"{name}: {count} argmax differences" for name, count in mismatches.items() if count] + [
        f"{name}: attributions differ by {diff:.3g} > {tolerance:g}" for name, diff in attribution_diffs.items()
        if diff > tolerance]
    if failed:
        raise ParityError(
            "parity gate failed, ONNX Runtime does not answer like PyTorch on "
            f"{len(docs.id_lists)} validation documents ({'; '.join(failed)}); no bundle written",
            report,
        )
    report["passed"] = True
    return report


def check_padding_invariance(
    engine: InferenceEngine,
    id_lists: Sequence[Sequence[int]],
    tolerance: float = INVARIANCE_TOLERANCE,
) -> dict:
    """Short documents alone vs. in a batch with the 63 longest ones (first and middle row); an explaining engine."""
    order = np.argsort([len(x) for x in id_lists], kind="stable")
    probes = [id_lists[i] for i in order[:INVARIANCE_PROBES]]
    companions = [id_lists[i] for i in order[::-1][:INVARIANCE_COMPANIONS]]
    worst = worst_attribution = 0.0
    label_changes = 0
    for probe in probes:
        alone, alone_attributions = engine.run_explained(*pad_batch([probe]))
        for row in (0, len(companions) // 2):
            batch = companions[:row] + [probe] + companions[row:]
            inside, inside_attributions = engine.run_explained(*pad_batch(batch))
            worst = max(worst, float(np.abs(alone[0] - inside[row]).max()))
            worst_attribution = max(worst_attribution, float(np.abs(
                alone_attributions[0] - inside_attributions[row, : len(probe)]).max()))
            label_changes += int(alone[0].argmax() != inside[row].argmax())
    report = {
        "passed": False,
        "tolerance": tolerance,
        "probe_lengths": sorted(len(p) for p in probes),
        "batch_size": len(companions) + 1,
        "padded_to": max(len(c) for c in companions),
        "max_abs_diff": worst,
        "attributions_max_abs_diff": worst_attribution,
        "label_changes": label_changes,
    }
    if max(worst, worst_attribution) > tolerance or label_changes:
        raise PaddingInvarianceError(
            f"padding-invariance gate failed: a short document's scores change by {worst:.3g} and its "
            f"attributions by {worst_attribution:.3g} (> {tolerance:g}, {label_changes} label changes) when batched "
            f"with {len(companions)} long documents; no bundle written",
            report,
        )
    report["passed"] = True
    return report
