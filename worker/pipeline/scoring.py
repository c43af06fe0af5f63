"""Scoring one batch: a prediction or a rejection per entry, in the batch's order.

Runs on the inference thread, beside the loop, and touches nothing but its
arguments. When ONNX Runtime fails on a batch, the batch is split in halves
until the failing record is alone; only that record is rejected
(``inference_error``) and its batch-mates are scored as usual. With ``--explain``
the same calls return the attributions the explanations are made of.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.exceptions import InferenceError
from worker import codec
from worker.explanations import top_tokens
from worker.metrics import WorkerMetrics
from worker.pipeline.messages import Entry
from worker.pipeline.ports import Engine


def score(engine: Engine, entries: list[Entry], top_k: int, metrics: WorkerMetrics, log: Any,
          explain: int = 0) -> list[Any]:
    """Per entry, its :class:`~core.engine.Prediction` or its :class:`~worker.codec.Rejection`.

    ``explain`` > 0: each prediction carries its ``explain`` strongest tokens (``worker.explanations``).
    """
    outcomes: list[Any] = [e.decoded if isinstance(e.decoded, codec.Rejection) else None for e in entries]
    scorable = [i for i, outcome in enumerate(outcomes) if outcome is None]
    results = _infer(engine, [entries[i] for i in scorable], metrics, log, explain > 0)
    good = [(i, r) for i, r in zip(scorable, results, strict=True) if not isinstance(r, codec.Rejection)]
    explanations = [top_tokens(entries[i].token_ids, attributions, engine.bundle.vocab, explain)
                    for i, (_, attributions) in good] if explain else None
    predictions = engine.to_predictions(np.stack([p for _, (p, _) in good]), top_k, explanations) if good else []
    for (i, _), prediction in zip(good, predictions, strict=True):
        outcomes[i] = prediction
    for i, r in zip(scorable, results, strict=True):
        if isinstance(r, codec.Rejection):
            outcomes[i] = r
    return outcomes


def _infer(engine: Engine, entries: list[Entry], metrics: WorkerMetrics, log: Any, explain: bool) -> list[Any]:
    """Per entry ``(probabilities, attributions or None)``, or its rejection."""
    if not entries:
        return []
    start = time.perf_counter()
    ids = [e.token_ids for e in entries]
    try:
        if explain:
            probabilities, attributions = engine.predict_explained(ids)
        else:
            probabilities, attributions = engine.predict_proba(ids), [None] * len(entries)
    except InferenceError as exc:
        if len(entries) == 1:
            log.warning("inference_rejected_record", source=entries[0].source.as_id(), error=str(exc))
            return [codec.Rejection(codec.INFERENCE_ERROR, str(exc))]
        middle = len(entries) // 2
        return (_infer(engine, entries[:middle], metrics, log, explain)
                + _infer(engine, entries[middle:], metrics, log, explain))
    metrics.inference_seconds.labels(engine.bundle.model_id).observe(time.perf_counter() - start)
    return list(zip(probabilities, attributions, strict=True))
