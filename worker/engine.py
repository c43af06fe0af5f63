"""Inference engine: token ids in, class probabilities out, through ONNX Runtime.

Used by ``lstm-worker classify`` (offline), by the streaming worker and by the
export parity gate, so all three score exactly the same way. It sorts a batch
by length and cuts it into sub-batches under a token budget, so little time
is spent on padding, then restores the caller's order.

Parallelism on the CPU is across sub-batches, not inside an operator: each
ONNX Runtime call runs on one thread, and ``threads`` calls run at once on a
shared session. An LSTM is hundreds of small sequential steps; with ORT's own
intra-op pool every step waits for its slowest thread, so one core taken by
the Kafka client or a neighbour stalls the whole batch (measured on 2 cores:
p99 latency at half load 0.6-1.2 s with a 2-thread pool). Per-document cost
on one thread is nearly flat from batch 1 to 256 here, so splitting a batch
across threads costs almost nothing and a busy core slows only its share.

Before serving, a bundle proves itself on this machine: ``open_verified`` runs
the bundle's self-test (``core.selftest``) through this very session and
provider and refuses the bundle when ONNX Runtime here disagrees with the
exporter's reference, which a checksum cannot see (docs/models.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.bundle import Bundle
from core.exceptions import BundleError
from core.vocab import pad_batch
from worker.exceptions import EngineError, InferenceError

PROVIDERS = ("auto", "cpu", "cuda")
# Rows per ONNX Runtime call when the caller leaves it to the engine. On the CPU small calls keep the
# LSTM's per-step state in cache and ORT's memory arena small (docs/worker.md, Inference threads);
# a GPU wants bigger calls.
CPU_ROWS_PER_CALL = 16
GPU_ROWS_PER_CALL = 64
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]


class SelfTestError(EngineError):
    """The bundle's self-test failed on this engine; ``result`` is the measurement (None: it could not run)."""

    def __init__(self, message: str, result: SelfTestResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SelfTestResult:
    """The bundle's self-test as measured by one engine (its provider, its ONNX Runtime, this CPU/GPU)."""

    n: int
    max_abs_diff: float
    argmax_mismatches: int
    tolerance: float
    provider: str
    reference: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.argmax_mismatches == 0

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"self-test {verdict}: max |Δp| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), "
                f"{self.argmax_mismatches} argmax mismatches on {self.n} inputs, provider {self.provider}, "
                f"expected by {self.reference}")


def open_session(model: bytes, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """An ONNX Runtime session of exactly these (already verified) bytes.

    Handed the bytes directly, ONNX Runtime keeps a second copy of the model for the session's
    lifetime (measured: +104 MB RSS for the 47 MB default bundle, +58 MB from a file). So on Linux
    the bytes go to an anonymous in-memory file, the session opens it by path, and the file is
    closed again: the memory of a path load, and still no file on disk that could be swapped
    after the checksum was verified.
    """
    try:
        fd = os.memfd_create("model.onnx", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or memfd refused (seccomp): keep the bytes route
        return ort.InferenceSession(model, options, providers=providers)
    try:
        with open(fd, "wb", closefd=False) as handle:
            handle.write(model)
        return ort.InferenceSession(f"/proc/self/fd/{fd}", options, providers=providers)
    finally:
        os.close(fd)


def choose_providers(requested: str) -> list[str]:
    """ONNX Runtime providers for ``auto|cpu|cuda``; ``cuda`` without CUDA is an error."""
    if requested not in PROVIDERS:
        raise EngineError(f"unknown provider {requested!r}; choose one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if requested == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if requested == "cuda":
        raise EngineError(
            "provider 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu on a GPU machine or use --provider cpu"
        )
    return [_CPU]


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


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
    ):
        self.bundle = bundle
        self.max_len = bundle.preprocessing.max_len
        self.tokens_per_call = max(tokens_per_call, self.max_len)
        self.sort_by_length = sort_by_length
        providers = choose_providers(provider)
        on_gpu = self.on_gpu = providers[0] == _CUDA
        self.rows_per_call = rows_per_call or (GPU_ROWS_PER_CALL if on_gpu else CPU_ROWS_PER_CALL)
        # On a GPU one caller feeds the device; on the CPU, ``threads`` single-threaded calls run at once.
        self.runners = 1 if on_gpu else (threads or usable_cpus())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = (threads or 0) if on_gpu else 1
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default; on a shared CPU that spinning is taken from the Kafka client.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            model = bundle.read_model()
        except (BundleError, OSError) as exc:
            raise EngineError(str(exc)) from None
        try:
            self.session = open_session(model, options, providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"{bundle.model_path}: ONNX Runtime could not load the model: {exc}") from exc
        active = self.session.get_providers()
        if provider == "cuda" and _CUDA not in active:
            raise EngineError(f"provider 'cuda' requested but ONNX Runtime could not start it (active: {active})")
        self.provider = "cuda" if _CUDA in active else "cpu"
        self._ids_name, self._lengths_name = bundle.input_names
        self._output_name = bundle.output_name
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
        got = np.concatenate([self.run_padded(*pad_batch(test.inputs[start:end])) for start, end in test.batches])
        expected = np.asarray(test.expected, dtype=np.float32)
        self.self_test_result = SelfTestResult(
            n=len(test.inputs),
            max_abs_diff=float(np.abs(got - expected).max()),
            argmax_mismatches=int((got.argmax(axis=1) != expected.argmax(axis=1)).sum()),
            tolerance=test.tolerance,
            provider=self.provider,
            reference=test.reference,
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

    def predict_proba(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities ``[n, classes]`` in the order of ``id_lists``."""
        result = np.empty((len(id_lists), len(self.labels)), dtype=np.float32)
        groups = self.sub_batches([len(x) for x in id_lists])
        if self._pool is None or len(groups) == 1:
            for group in groups:
                result[group] = self.run_padded(*pad_batch([id_lists[i] for i in group]))
            return result
        # Pad here, not in the runners: a runner then needs the GIL only to enter and leave ORT, so a
        # busy consumer thread cannot hold it up between calls.
        padded = [pad_batch([id_lists[i] for i in group]) for group in groups]
        futures = [self._pool.submit(self.run_padded, ids, lengths) for ids, lengths in padded]
        for group, future in zip(groups, futures, strict=True):
            result[group] = future.result()  # re-raises InferenceError of a group
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def predict_texts(self, texts: Sequence[str], top_k: int = 1) -> list[Prediction]:
        return self.to_predictions(self.predict_proba([self.token_ids(t) for t in texts]), top_k)

    def to_predictions(self, probabilities: np.ndarray, top_k: int = 1) -> list[Prediction]:
        k = max(1, min(top_k, len(self.labels)))
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = self.labels
        return [
            Prediction(
                labels[row[0]],
                float(probs[row[0]]),
                tuple((labels[j], float(probs[j])) for j in row),
            )
            for probs, row in zip(probabilities, best, strict=True)
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
