"""What the streaming loop talks to: a source of records, a sink for outputs, an inference engine.

Protocols, so that the loop runs against kafka_io and the real engine in
production and against in-memory fakes in the unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from kafka.structs import TopicPartition

from worker import codec
from worker.kafka_io import InputRecord, RebalanceHooks, SendFuture
from worker.offsets import Ticket


class Source(Protocol):
    def subscribe(self, hooks: RebalanceHooks) -> None: ...
    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]: ...
    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def lag(self) -> dict[TopicPartition, int]: ...
    def close(self) -> None: ...


class Sink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> SendFuture: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self, timeout_s: float) -> None: ...


class Engine(Protocol):
    def token_ids(self, text: str) -> list[int]: ...
    def predict_proba(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray: ...
    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1) -> list: ...


@dataclass(frozen=True)
class WorkItem:
    record: InputRecord
    ticket: Ticket
    source: codec.SourceRef
    record_id: Any
    token_ids: list[int]
    queued_at: float = 0.0  # monotonic time it entered the work queue: the batcher's deadline counts from it
