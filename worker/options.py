"""Options that ``run`` and ``classify`` share: one name, one env var, one meaning per concept.

A *batch* is the records (or input lines) handled together; a *call* is one
ONNX Runtime call inside a batch (the engine splits a batch into length-sorted
calls). Exit codes are the same for the same situation in both commands.

``--model`` is a bundle or a model store (``core.model_store``: then its
CURRENT version is served). Either way the bundle must pass its self-test on
this engine before anything is served (``core.engine.open_verified``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import structlog

from core.bundle import load_bundle
from core.cli_types import FiniteFloat
from core.engine import InferenceEngine, open_verified
from core.exceptions import BundleError, EngineError, StoreError
from core.exit_codes import CannotStart
from core.model_store import ModelStore, resolve_model
from core.runtime import PROVIDERS
from worker.settings import INPUT_FORMATS

# One line wherever a bundle without calibration is loaded (report_self_test).
UNCALIBRATED_WARNING = ("its scores are uncalibrated (exported before lstm-train fitted a calibration, or trained "
                        "without validation folds): a score is not the chance that the label is right; retrain and "
                        "re-export it for calibrated scores")


def open_engine(model: Path, **engine_settings: Any) -> InferenceEngine:
    """Load and verify the bundle (or a store's CURRENT), open it in ONNX Runtime and run its self-test.

    A bad bundle, store, provider or a failed self-test is :class:`CannotStart`, and so is
    ``explain=True`` for a bundle exported before explanations existed. The self-test's measurement is
    on ``engine.self_test_result`` and in the line this prints.
    """
    try:
        bundle_path, store = resolve_model(model)
        bundle = load_bundle(bundle_path)
    except (BundleError, StoreError) as exc:
        raise CannotStart(f"--model: {exc}") from None
    try:
        engine = open_verified(bundle, **engine_settings)
    except EngineError as exc:  # names --provider, the model file, or the self-test's max |Δp| and tolerance
        raise CannotStart(str(exc)) from None
    report_self_test(engine, store)
    return engine


def report_self_test(engine: InferenceEngine, store: ModelStore | None = None) -> None:
    """One line on stderr: a structured event where ``run`` configured logging, plain text for ``classify``."""
    result, bundle = engine.self_test_result, engine.bundle
    where = {"store": str(store.path), "store_version": bundle.path.name} if store is not None else {}
    if structlog.is_configured():
        log = structlog.get_logger("lstm-worker")
        if result is None:
            log.warning("model_without_self_test", model=bundle.model_id, bundle=str(bundle.path),
                        format_version=bundle.manifest["format_version"], **where)
        else:
            log.info("model_self_test", model=bundle.model_id, passed=result.passed,
                     max_abs_diff=result.max_abs_diff, tolerance=result.tolerance, inputs=result.n,
                     provider=result.provider, **where)
        if not bundle.calibrated:
            log.warning("model_uncalibrated", model=bundle.model_id, bundle=str(bundle.path),
                        message=UNCALIBRATED_WARNING, **where)
        return
    origin = f" (store {store.path}, CURRENT)" if store is not None else ""
    if result is None:
        click.echo(f"warning: {bundle.model_id}{origin} carries no self-test (bundle format "
                   f"{bundle.manifest['format_version']}); served unchecked, re-export it to get one", err=True)
    else:
        click.echo(f"{bundle.model_id}{origin}: {result.describe()}", err=True)
    if not bundle.calibrated:
        click.echo(f"warning: {bundle.model_id}{origin}: {UNCALIBRATED_WARNING}", err=True)


def option(name: str, *declarations: str, **kwargs: Any) -> Callable:
    """A click option with its LSTM_WORKER_* env var (named after the option) shown in --help."""
    envvar = "LSTM_WORKER_" + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, *declarations, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def engine_options(*, batch_size: int, batch_help: str) -> Callable:
    """The model, the engine and the input contract: identical in ``run`` and ``classify``."""
    decorators = [
        option("--model", required=True, type=click.Path(path_type=Path),
               help="Model bundle directory written by lstm-export, or a model store (its CURRENT version is "
                    "served). Refused unless the bundle's self-test passes here."),
        option("--batch-size", default=batch_size, type=click.IntRange(1), help=batch_help),
        option("--rows-per-call", default=0, type=click.IntRange(0),
               help="Most records per ONNX Runtime call inside a batch (0 = 16 on the CPU, 64 on a GPU)."),
        option("--tokens-per-call", default=16384, type=click.IntRange(1),
               help="Most padded tokens per ONNX Runtime call inside a batch."),
        option("--provider", default="auto", type=click.Choice(PROVIDERS),
               help="ONNX Runtime provider: auto (CUDA when onnxruntime-gpu and a GPU are present, else CPU), "
                    "cpu, or cuda (an error when CUDA is unavailable)."),
        option("--threads", default=0, type=click.IntRange(0),
               help="Parallel ONNX Runtime calls, one thread each (0 = one per usable CPU, cgroup limit included)."),
        option("--input-format", default="auto", type=click.Choice(INPUT_FORMATS),
               help="auto: a JSON object is JSON, anything else text (see docs/worker.md); json; text."),
        option("--text-field", default="text", help="JSON field holding the text."),
        option("--top-k", default=3, type=click.IntRange(1), help="How many best labels each output lists."),
        option("--min-confidence", default=0.0, type=FiniteFloat(0, 1),
               help="Labels whose top score is below this carry \"low_confidence\": true; run --review-topic sends "
                    "them there instead (0 = off; choosing it: docs/worker.md)."),
        option("--explain", default=0, type=click.IntRange(0), metavar="K",
               help="Each label also lists the K tokens of the document that raised its probability most, with "
                    "their weights (0 = off; every bundle lstm-export writes can, a bundle exported before "
                    "explanations existed is refused; see docs/worker.md, Explanations)."),
        option("--max-message-bytes", default=1_000_000, type=click.IntRange(1),
               help="Larger inputs are not classified: dead-lettered (run) or an error record (classify), "
                    "as 'oversize'."),
    ]

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply
