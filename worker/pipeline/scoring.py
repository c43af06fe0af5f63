"""Scoring one batch: a prediction or a rejection per entry, in the batch's order.

Runs on the inference thread, beside the loop, and touches nothing but its
arguments. When ONNX Runtime fails on a batch, the batch is split in halves
until the failing record is alone; only that record is rejected
(``inference_error``) and its batch-mates are scored as usual.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from worker import codec
from worker.exceptions import InferenceError
from worker.metrics import WorkerMetrics
from worker.pipeline.messages import Entry
from worker.pipeline.ports import Engine


def score(engine: Engine, entries: list[Entry], top_k: int, metrics: WorkerMetrics, log: Any) -> list[Any]:
    """Per entry, its :class:`~worker.engine.Prediction` or its :class:`~worker.codec.Rejection`."""
    outcomes: list[Any] = [e.decoded if isinstance(e.decoded, codec.Rejection) else None for e in entries]
    scorable = [i for i, outcome in enumerate(outcomes) if outcome is None]
    probabilities = _infer(engine, [entries[i] for i in scorable], metrics, log)
    good = [(i, p) for i, p in zip(scorable, probabilities, strict=True) if not isinstance(p, codec.Rejection)]
    predictions = engine.to_predictions(np.stack([p for _, p in good]), top_k) if good else []
    for (i, _), prediction in zip(good, predictions, strict=True):
        outcomes[i] = prediction
    for i, p in zip(scorable, probabilities, strict=True):
        if isinstance(p, codec.Rejection):
            outcomes[i] = p
    return outcomes


def _infer(engine: Engine, entries: list[Entry], metrics: WorkerMetrics, log: Any) -> list[Any]:
    if not entries:
        return []
    start = time.perf_counter()
    try:
        probabilities = engine.predict_proba([e.token_ids for e in entries])
    except InferenceError as exc:
        if len(entries) == 1:
            log.warning("inference_rejected_record", source=entries[0].source.as_id(), error=str(exc))
            return [codec.Rejection(codec.INFERENCE_ERROR, str(exc))]
        middle = len(entries) // 2
        return _infer(engine, entries[:middle], metrics, log) + _infer(engine, entries[middle:], metrics, log)
    metrics.inference_seconds.labels(engine.bundle.model_id).observe(time.perf_counter() - start)
    return list(probabilities)
