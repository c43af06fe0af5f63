"""The export's first stage: what PyTorch answers, before any ONNX graph exists.

The gates (``export/gates.py``) hold the graph to these outputs, and the self-test's inputs are chosen
here (``export/selftest_inputs.py``), so a consumer can later re-check the published graph against them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from export import parity, selftest_inputs
from export.checkpoint import Checkpoint


@dataclass(frozen=True)
class TorchReference:
    """PyTorch's answers on the gates' documents and on the self-test's inputs, in their fixed batches."""

    documents: parity.ParityDocuments
    plan: list[tuple[int, int]]
    probabilities: np.ndarray
    attributions: list[np.ndarray]
    test_inputs: list[list[int]]
    test_plan: list[tuple[int, int]]
    test_probabilities: np.ndarray
    # How many shuffled validation token bags the self-test's inputs were chosen among.
    candidate_count: int


def torch_reference(model: torch.nn.Module, checkpoint: Checkpoint, texts: Sequence[str], parity_docs: int,
                    log: Callable[[str], None]) -> TorchReference:
    max_len = checkpoint.preprocessing.max_len
    documents = parity.select_documents(texts, checkpoint.vocab, max_len, max(parity_docs, parity.MIN_PARITY_DOCS))
    plan = parity.batch_plan(len(documents.id_lists))
    log(f"PyTorch reference on {len(documents.id_lists)} validation documents")
    probabilities, attributions = parity.torch_outputs(model, documents.id_lists, plan)
    candidates = selftest_inputs.candidates([checkpoint.vocab.token_ids(t, max_len) for t in texts], max_len)
    log(f"self-test: choosing inputs among {len(candidates)} shuffled validation token bags")
    chosen = selftest_inputs.select(candidates, parity.torch_probabilities(model, candidates, parity.batch_plan(
        len(candidates))), len(checkpoint.labels), max_len, parity.PARITY_TOLERANCE)
    test_inputs = [candidates[i] for i in chosen]
    test_plan = parity.batch_plan(len(test_inputs), selftest_inputs.SELF_TEST_BATCH_SIZES)
    return TorchReference(documents, plan, probabilities, attributions, test_inputs, test_plan,
                          parity.torch_probabilities(model, test_inputs, test_plan), len(candidates))
