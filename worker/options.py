"""Options that ``run`` and ``classify`` share: one name, one env var, one meaning per concept.

A *batch* is the records (or input lines) handled together; a *call* is one
ONNX Runtime call inside a batch (the engine splits a batch into length-sorted
calls). Exit codes are the same for the same situation in both commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.bundle import load_bundle
from core.exceptions import BundleError
from worker.engine import PROVIDERS, InferenceEngine
from worker.exceptions import EngineError
from worker.settings import INPUT_FORMATS

EXIT_OK = 0
EXIT_FAILED = 1  # failed while running (run: fenced, a bug; classify: inference stopped)
EXIT_CANNOT_START = 2  # nothing ran: a bad option, bundle, provider, broker or topic (click's usage errors too)
EXIT_SOME_REJECTED = 3  # classify finished, but some lines got error records instead of labels


class CannotStart(click.ClickException):
    """A user error found before any input was read: one line naming the fix, no traceback."""

    exit_code = EXIT_CANNOT_START


def open_engine(model: Path, **engine_settings: Any) -> InferenceEngine:
    """Load and verify the bundle, open it in ONNX Runtime; a bad bundle or provider is :class:`CannotStart`."""
    try:
        bundle = load_bundle(model)
    except BundleError as exc:
        raise CannotStart(f"--model: {exc}") from None
    try:
        return InferenceEngine(bundle, **engine_settings)
    except EngineError as exc:  # names --provider or the model file itself
        raise CannotStart(str(exc)) from None


def option(name: str, *declarations: str, **kwargs: Any) -> Callable:
    """A click option with its LSTM_WORKER_* env var (named after the option) shown in --help."""
    envvar = "LSTM_WORKER_" + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, *declarations, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def engine_options(*, batch_size: int, batch_help: str) -> Callable:
    """The model, the engine and the input contract: identical in ``run`` and ``classify``."""
    decorators = [
        option("--model", required=True, type=click.Path(path_type=Path),
               help="Model bundle directory written by lstm-export."),
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
        option("--max-message-bytes", default=1_000_000, type=click.IntRange(1),
               help="Larger inputs are not classified: dead-lettered (run) or an error record (classify), "
                    "as 'oversize'."),
    ]

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply
