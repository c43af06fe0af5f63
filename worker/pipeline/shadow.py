"""Shadow scoring: a candidate model scores the same batches after the primary answered, and never changes it.

``--shadow-model`` names a bundle or a store (hot-swapped like the primary).
After a primary batch is published, a ``--shadow-sample`` share of batches is
offered here. The shadow scores them on its own thread with its own tokenizer;
its results only count in metrics (records scored, top-1 agreement with the
primary, disagreements per label pair) and, with ``--shadow-topic``, go out as
labels naming the shadow model. The primary's outputs, order, offsets and
delivery guarantee are untouched. The shadow is skipped first: while fetching
is paused, or when a newer batch is offered before the last one started, the
batch is dropped and counted instead of queueing up behind the primary.
"""

from __future__ import annotations

import dataclasses
import random
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from worker import codec
from worker.metrics import WorkerMetrics
from worker.pipeline.messages import Entry, Message, render
from worker.pipeline.models import ModelWatcher, ServedModel
from worker.pipeline.scoring import score
from worker.settings import WorkerSettings


def score_as_shadow(served: ServedModel, entries: list[Entry], top_k: int, metrics: WorkerMetrics,
                    log: Any) -> list[Any]:
    """Score with the shadow's own vocabulary: the entries were tokenised for the primary."""
    own = [dataclasses.replace(e, token_ids=served.engine.token_ids(e.decoded.text))
           if isinstance(e.decoded, codec.Decoded) else e for e in entries]
    return score(served.engine, own, top_k, metrics, log)


class Shadow:
    def __init__(self, settings: WorkerSettings, served: ServedModel, models: ModelWatcher, metrics: WorkerMetrics,
                 log: Any):
        self.settings, self.served, self.models, self.metrics, self.log = settings, served, models, metrics, log
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._offered: tuple[list[Entry], list[Any]] | None = None  # (entries, primary outcomes), not started
        self._running: tuple[list[Entry], list[Any], Future, ServedModel] | None = None
        self._random = random.Random()

    def offer(self, entries: list[Entry], primary: list[Any]) -> None:
        """A published primary batch; kept for scoring if it falls in the sample."""
        if self._random.random() >= self.settings.shadow_sample:
            return
        if self._offered is not None:  # the shadow is behind: the older batch is skipped, not queued
            self._skip(self._offered[1])
        self._offered = entries, primary

    def advance(self, now: float, *, backpressure: bool) -> list[Message]:
        """Collect a finished shadow batch (its messages for --shadow-topic) and start the next one if it may."""
        messages: list[Message] = []
        if self._running is not None and self._running[2].done():
            entries, primary, future, served = self._running
            self._running = None
            messages = self._compare(entries, primary, future.result(), served)
        if self._running is None:
            new = self.models.take_ready(now)
            if new is not None:
                old, self.served = self.served, new
                old.engine.close()
                self.log.info("shadow_model_swapped", old=old.model_id, new=new.model_id, version=new.version)
            if self._offered is not None and backpressure:
                self._skip(self._offered[1])
                self._offered = None
            elif self._offered is not None:
                (entries, primary), self._offered = self._offered, None
                served = self.served
                self._running = entries, primary, self._executor.submit(
                    score_as_shadow, served, entries, self.settings.top_k, self.metrics, self.log), served
        return messages

    def _skip(self, primary: list[Any]) -> None:
        """Count the labelled records of a batch the shadow will not score (dead letters have nothing to compare)."""
        self.metrics.shadow_skipped.inc(sum(1 for outcome in primary if not isinstance(outcome, codec.Rejection)))

    def _compare(self, entries: list[Entry], primary: list[Any], shadow: list[Any],
                 served: ServedModel) -> list[Message]:
        messages = []
        for entry, ours, theirs in zip(entries, primary, shadow, strict=True):
            if isinstance(ours, codec.Rejection) or isinstance(theirs, codec.Rejection):
                continue  # nothing to compare: the record has no primary label, or the shadow could not score it
            self.metrics.shadow_records.labels(served.model_id).inc()
            if ours.label == theirs.label:
                self.metrics.shadow_agreements.labels(served.model_id).inc()
            else:
                self.metrics.shadow_disagreements.labels(ours.label, theirs.label).inc()
            if self.settings.shadow_topic:
                label = render(entry, theirs, self.settings, served.model_id)
                messages.append(dataclasses.replace(label, topic=self.settings.shadow_topic, shadow=True))
        return messages

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.models.close()
        self.served.engine.close()
