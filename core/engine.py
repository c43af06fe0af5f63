"""Inference engine: token ids in, class probabilities out, through ONNX Runtime.

Used by ``lstm-worker classify`` (offline), by the streaming worker and by the
export parity gate, so all three score exactly the same way. It sorts a batch
by length and cuts it into sub-batches under a token budget, so little time
is spent on padding, then restores the caller's order.

Parallelism on the CPU is across sub-batches, not inside an operator: each
ONNX Runtime call runs on one thread, and ``threads`` calls run at once on a
shared session. An LSTM is hundreds of small sequential steps; with ORT's own
intra-op pool every step waits for its slowest thread, so one core taken by
the Kafka client or a neighbour stalls the whole batch. Per-document cost on
one thread is nearly flat across batch sizes, so splitting a batch across
threads costs almost nothing and a busy core slows only its share (the
measurements: docs/worker.md, Inference threads).

Before serving, a bundle proves itself on this machine: ``open_verified`` runs
the bundle's self-test (``core.selftest``) through this very session and
provider and refuses the bundle when ONNX Runtime here disagrees with the
exporter's reference, which a checksum cannot see (docs/models.md).

An engine opened with ``explain`` also serves :meth:`InferenceEngine.predict_explained`:
the same calls, fed ``explain=True``, return each position's attribution to the
predicted label as well (``export/explain_graph.py``); plain calls never compute them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.bundle import Bundle
from core.exceptions import BundleError, EngineError, InferenceError
from core.runtime import CUDA, choose_providers, open_session, usable_cpus
from core.verification import SelfTestError, SelfTestResult, well_formed
from core.vocab import pad_batch

# Rows per ONNX Runtime call when the caller leaves it to the engine. On the CPU small calls keep the
# LSTM's per-step state in cache and ORT's memory arena small (docs/worker.md, Inference threads);
# a GPU wants bigger calls.
CPU_ROWS_PER_CALL = 16
GPU_ROWS_PER_CALL = 64


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]
    # With --explain: the tokens that raised the label's probability most, (token, weight), strongest first.
    explanation: tuple[tuple[str, float], ...] | None = None


class InferenceEngine:
    """One ONNX Runtime session over a verified bundle."""

    def __init__(
        self,
        bundle: Bundle,
        provider: str = "auto",
        threads: int = 0,
        rows_per_call: int = 0,
        tokens_per_call: int = 16384,
        sort_by_length: bool = True,
        explain: bool = False,
    ):
        """``explain``: also serve :meth:`predict_explained`; refused for a bundle exported without attributions."""
        self.bundle = bundle
        if explain and bundle.attribution_names is None:
            raise EngineError(f"--explain: {bundle.model_id} ({bundle.path}) was exported without attributions; "
                              "re-export it with this version's lstm-export to explain its labels")
        self.max_len = bundle.preprocessing.max_len
        self.tokens_per_call = max(tokens_per_call, self.max_len)
        self.sort_by_length = sort_by_length
        providers = choose_providers(provider)
        on_gpu = self.on_gpu = providers[0] == CUDA
        self.rows_per_call = rows_per_call or (GPU_ROWS_PER_CALL if on_gpu else CPU_ROWS_PER_CALL)
        # On a GPU one caller feeds the device; on the CPU, ``threads`` single-threaded calls run at once.
        self.runners = 1 if on_gpu else (threads or usable_cpus())
        import onnxruntime as ort  # where a session opens: an install without ONNX Runtime still imports core

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The memory pattern planner keeps a buffer plan per input shape, and a stream's micro-batches come
        # in many shapes (rows x longest document): with it on, resident memory only grew, and no call was
        # faster (docs/worker.md, "Inference threads", Memory).
        options.enable_mem_pattern = False
        options.intra_op_num_threads = (threads or 0) if on_gpu else 1
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default; on a shared CPU that spinning is taken from the Kafka client.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Errors only: ORT warns at every load that the overridable ``explain`` input is not a constant, by design.
        options.log_severity_level = 3
        try:
            model = bundle.read_model()
        except (BundleError, OSError) as exc:
            raise EngineError(str(exc)) from None
        try:
            self.session = open_session(model, options, providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"{bundle.model_path}: ONNX Runtime could not load the model: {exc}") from exc
        active = self.session.get_providers()
        if provider == "cuda" and CUDA not in active:
            raise EngineError(f"provider 'cuda' requested but ONNX Runtime could not start it (active: {active})")
        self.provider = "cuda" if CUDA in active else "cpu"
        self._ids_name, self._lengths_name = bundle.input_names
        self._output_name = bundle.output_name
        self.explains = explain
        if explain:
            self._explain_name, self._attributions_name = bundle.attribution_names  # type: ignore[misc]
            if self._attributions_name not in {o.name for o in self.session.get_outputs()}:
                raise EngineError(f"{bundle.model_path}: the graph has no output {self._attributions_name!r} "
                                  "although the manifest names it; re-export the model")
        self.labels = bundle.labels
        self._pool = ThreadPoolExecutor(self.runners, thread_name_prefix="ort") if self.runners > 1 else None
        # Set by self_test(); None until then and for format 1 bundles, which carry no self-test.
        self.self_test_result: SelfTestResult | None = None

    def self_test(self) -> SelfTestResult | None:
        """Score the bundle's self-test inputs in their recorded batches; None when the bundle has none.

        Returns the measurement whether or not it passed (``.passed``); :func:`open_verified` is the
        refusing wrapper. Raises :class:`InferenceError` if ONNX Runtime cannot run the inputs at all.
        """
        test = self.bundle.self_test
        if test is None:
            return None
        batches = [pad_batch(test.inputs[start:end]) for start, end in test.batches]
        attributions_ok = True
        if self.explains:  # the self-test then runs the graph path explaining engines serve
            outputs = [self.run_explained(ids, lengths) for ids, lengths in batches]
            got = np.concatenate([probabilities for probabilities, _ in outputs])
            attributions_ok = all(well_formed(a, ids, lengths) for (ids, lengths), (_, a) in
                                  zip(batches, outputs, strict=True))
        else:
            got = np.concatenate([self.run_padded(ids, lengths) for ids, lengths in batches])
        expected = np.asarray(test.expected, dtype=np.float32)
        self.self_test_result = SelfTestResult(
            n=len(test.inputs),
            max_abs_diff=float(np.abs(got - expected).max()),
            argmax_mismatches=int((got.argmax(axis=1) != expected.argmax(axis=1)).sum()),
            tolerance=test.tolerance,
            provider=self.provider,
            reference=test.reference,
            attributions_ok=attributions_ok,
        )
        return self.self_test_result

    def token_ids(self, text: str) -> list[int]:
        """The bundle's text→ids contract, truncated at the model's max length."""
        return self.bundle.vocab.token_ids(text, self.max_len)

    def sub_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Index groups, each padded to at most ``tokens_per_call`` tokens and ``rows_per_call`` rows."""
        lengths = np.asarray(lengths)
        order = np.argsort(lengths, kind="stable") if self.sort_by_length else np.arange(len(lengths))
        rows = self.rows_per_call
        if self.runners > 1:  # about two groups per runner, so a runner that finishes early takes another
            rows = max(1, min(rows, math.ceil(len(order) / (2 * self.runners))))
        groups: list[np.ndarray] = []
        start = 0
        while start < len(order):
            end, width = start, 0
            while end < len(order) and end - start < rows:
                candidate = max(width, int(lengths[order[end]]))
                if end > start and candidate * (end - start + 1) > self.tokens_per_call:
                    break
                width, end = candidate, end + 1
            groups.append(order[start:end])
            start = end
        return groups

    def run_padded(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call on an already padded batch."""
        try:
            return self.session.run([self._output_name], {self._ids_name: ids, self._lengths_name: lengths})[0]
        except Exception as exc:
            raise InferenceError(f"inference failed on a batch of {len(lengths)}: {exc}") from exc

    def run_explained(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One ONNX Runtime call that also computes the attributions: ``(probabilities, attributions [n, width])``."""
        feed = {self._ids_name: ids, self._lengths_name: lengths, self._explain_name: np.array(True)}
        try:
            probabilities, attributions = self.session.run([self._output_name, self._attributions_name], feed)
        except Exception as exc:
            raise InferenceError(f"inference failed on a batch of {len(lengths)}: {exc}") from exc
        return probabilities, attributions

    def predict_proba(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities ``[n, classes]`` in the order of ``id_lists``."""
        return self._predict(id_lists, explain=False)[0]

    def predict_explained(self, id_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities ``[n, classes]`` and each document's attributions (one per token), in input order."""
        return self._predict(id_lists, explain=True)

    def _predict(self, id_lists: Sequence[Sequence[int]], explain: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        result = np.empty((len(id_lists), len(self.labels)), dtype=np.float32)
        attributions: list[np.ndarray] = [np.empty(0, np.float32)] * len(id_lists)
        run: Any = self.run_explained if explain else self.run_padded
        groups = self.sub_batches([len(x) for x in id_lists])
        # Pad here, not in the runners: a runner then needs the GIL only to enter and leave ORT, so a
        # busy consumer thread cannot hold it up between calls.
        padded = (pad_batch([id_lists[i] for i in group]) for group in groups)
        if self._pool is None or len(groups) == 1:
            outputs = (run(ids, lengths) for ids, lengths in padded)
        else:
            futures = [self._pool.submit(run, ids, lengths) for ids, lengths in padded]
            outputs = (future.result() for future in futures)  # re-raises InferenceError of a group
        for group, output in zip(groups, outputs, strict=True):
            if explain:
                output, explained = output
                for row, index in enumerate(group):
                    attributions[index] = explained[row, : len(id_lists[index])]
            result[group] = output
        return result, attributions

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def predict_texts(self, texts: Sequence[str], top_k: int = 1) -> list[Prediction]:
        return self.to_predictions(self.predict_proba([self.token_ids(t) for t in texts]), top_k)

    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1,
                       explanations: Sequence[tuple[tuple[str, float], ...]] | None = None) -> list[Prediction]:
        k = max(1, min(top_k, len(self.labels)))
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = self.labels
        return [
            Prediction(
                labels[row[0]],
                float(probs[row[0]]),
                tuple((labels[j], float(probs[j])) for j in row),
                None if explanations is None else explanations[i],
            )
            for i, (probs, row) in enumerate(zip(probabilities, best, strict=True))
        ]


def open_verified(bundle: Bundle, **engine_settings: object) -> InferenceEngine:
    """An engine over ``bundle`` whose self-test passed here; :class:`SelfTestError` (an EngineError) if not.

    Every consumer loads through this (``run``, ``classify``, ``promote``, a hot swap), so the check
    exists once. A format 1 bundle has no self-test and is returned unchecked
    (``engine.self_test_result is None``); the caller warns.
    """
    engine = InferenceEngine(bundle, **engine_settings)  # type: ignore[arg-type]
    try:
        result = engine.self_test()
    except InferenceError as exc:
        engine.close()
        raise SelfTestError(f"{bundle.path}: refused, the self-test could not run on provider {engine.provider}: "
                            f"{exc}", None) from None
    if result is not None and not result.passed:
        engine.close()
        raise SelfTestError(f"{bundle.path}: refused, {result.describe()}; ONNX Runtime here does not answer as at "
                            "export (different onnxruntime, provider or CPU kernels, or edited expectations)", result)
    return engine
