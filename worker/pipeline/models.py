"""The model being served, and the next one: a store's CURRENT is loaded and self-tested beside it.

``run --model`` names a bundle (served for the worker's life) or a model store
(docs/models.md). With a store, :class:`ModelWatcher` re-reads ``CURRENT`` every
``--model-poll-s`` seconds, or at once after SIGHUP. A new version is loaded on a
background thread, beside the serving model, and must pass its self-test with the
provider in use (``core.engine.open_verified``); only then does the loop switch
to it, at a batch boundary (:meth:`worker.pipeline.loop.Pipeline`). A version that
fails is refused: the old model keeps serving, the worker stays ready, and the
reason is logged and counted. At most two models are in memory, and only while
the batch scored by the old one finishes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from core.bundle import load_bundle
from core.engine import InferenceEngine, open_verified
from core.exceptions import ContractError
from core.model_store import ModelStore
from worker.exceptions import WorkerError
from worker.metrics import WorkerMetrics


@dataclass(frozen=True)
class ServedModel:
    engine: InferenceEngine
    version: str | None  # the store's version; None for a bundle given directly

    @property
    def model_id(self) -> str:
        return self.engine.bundle.model_id


def describe(metrics: WorkerMetrics, served: ServedModel) -> None:
    """Export which model answers: the info series and its self-test measurement."""
    bundle, result = served.engine.bundle, served.engine.self_test_result
    metrics.model_info.info({"model": bundle.model_id, "name": bundle.name, "version": bundle.version,
                             "store_version": served.version or "", "provider": served.engine.provider})
    if result is not None:
        metrics.model_self_test_max_abs_diff.labels(bundle.model_id).set(result.max_abs_diff)


class ModelWatcher:
    """Watches a store's CURRENT; hands the loop a verified new model once, when one is ready."""

    def __init__(self, store: ModelStore | None, serving: ServedModel, *, poll_s: float,
                 engine_settings: dict[str, Any], metrics: WorkerMetrics, log: Any):
        self.store, self.poll_s, self.engine_settings = store, poll_s, engine_settings
        self.metrics, self.log = metrics, log
        self._serving_version = serving.version
        self._refused: str | None = None  # a version that failed: not tried again until CURRENT changes
        self._check_now = threading.Event()
        self._next_check = time.monotonic() + poll_s
        self._loading: threading.Thread | None = None
        self._ready: ServedModel | None = None

    def request_check(self) -> None:
        """Only sets a flag: safe from a signal handler (SIGHUP)."""
        self._check_now.set()

    def take_ready(self, now: float) -> ServedModel | None:
        """A verified new model to switch to (once), or None; starts a load when CURRENT changed."""
        if self._ready is not None:
            ready, self._ready = self._ready, None
            self._serving_version = ready.version
            return ready
        if self.store is None or self._loading is not None and self._loading.is_alive():
            return None
        if not self._check_now.is_set() and now < self._next_check:
            return None
        self._check_now.clear()
        self._next_check = now + self.poll_s
        try:
            version = self.store.current_version()
        except (ContractError, OSError) as exc:
            self._refuse(None, f"cannot read CURRENT: {exc}")
            return None
        if version is None or version in (self._serving_version, self._refused):
            return None
        self.log.info("model_loading", version=version, serving=self._serving_version)
        self._loading = threading.Thread(target=self._load, args=(version,), name="model-load", daemon=True)
        self._loading.start()
        return None

    def _load(self, version: str) -> None:
        started = time.monotonic()
        try:
            bundle = load_bundle(self.store.bundle_path(version))
            engine = open_verified(bundle, **self.engine_settings)
        except (ContractError, WorkerError, OSError) as exc:
            self._refuse(version, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors: refuse the version, keep serving
            self._refuse(version, f"{type(exc).__name__}: {exc}")
            return
        result = engine.self_test_result
        self.log.info("model_loaded_beside", version=version, model=bundle.model_id,
                      load_s=round(time.monotonic() - started, 2),
                      self_test_max_abs_diff=result.max_abs_diff if result is not None else None)
        self._ready = ServedModel(engine, version)

    def _refuse(self, version: str | None, reason: str) -> None:
        self._refused = version
        self.metrics.model_reload_failures.inc()
        self.log.error("model_reload_refused", version=version, reason=reason,
                       serving=self._serving_version, hint="the serving model stays; fix or promote another version")

    def close(self) -> None:
        if self._loading is not None:
            self._loading.join(timeout=5)
        if self._ready is not None:
            self._ready.engine.close()
