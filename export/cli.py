"""``lstm-export``: checkpoint directory → verified, self-contained ONNX model bundle."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from core.cli_types import FiniteFloat
from core.exceptions import ContractError
from core.exit_codes import EXIT_PARTIAL, CannotStart
from core.model_store import ModelStore
from core.output_paths import unwritable_reason
from export import __version__
from export.exceptions import ExportError, GateError
from export.gates import QUANTIZATIONS
from export.onnx_export import DEFAULT_OPSET, MIN_OPSET
from export.parity import MIN_PARITY_DOCS
from export.pipeline import ExportConfig, run_export, summary
from export.quantize import MAX_ACCURACY_DROP_POINTS

_SHOW_TOOL_VERSION = "\0show-tool-version"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _identifier(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _NAME_RE.fullmatch(value):
        raise click.BadParameter("use letters, digits, '.', '_' or '-' (it becomes part of 'name@version')")
    return value


def _version(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # `--version VERSION` names the model's version (issue #3); a bare `--version` keeps the
    # universal meaning "print the tool's version", so both readings of the flag work.
    if value == _SHOW_TOOL_VERSION:
        click.echo(f"lstm-export, version {__version__}")
        ctx.exit(0)
    return _identifier(ctx, param, value)


class ExportCommand(click.Command):
    """Refuses a bare ``--version`` among other arguments: it would print the tool's version and export nothing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for position, arg in enumerate(args):
            if arg == "--":
                break
            bare = arg == "--version" and (position + 1 == len(args) or args[position + 1].startswith("-"))
            if bare and len(args) > 1:
                raise CannotStart("--version needs a value here: the model's version, e.g. --version 2 "
                                  "(alone, `lstm-export --version` prints the tool's version)")
        return super().parse_args(ctx, args)


def _on_command_line(parameter: str) -> bool:
    return click.get_current_context().get_parameter_source(parameter) is click.core.ParameterSource.COMMANDLINE


@click.command(cls=ExportCommand,
               context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LSTM_EXPORT",
                                 "max_content_width": 100})
@click.option("--checkpoint", "checkpoint", required=True, show_envvar=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory written by `lstm-train --output` (checkpoint.pt, validation.jsonl, metrics.json).")
@click.option("--output", "output", default=None, show_envvar=True, type=click.Path(path_type=Path),
              help="Bundle directory to create; must not exist (or be empty). Written atomically. "
                   "Give --output or --store.")
@click.option("--store", "store", default=None, show_envvar=True, type=click.Path(path_type=Path),
              help="Model store to add the bundle to, as version --version (required; refused if it exists). "
                   "The store's first version becomes its CURRENT; later ones are served only after "
                   "`lstm-worker promote` (docs/models.md).")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None, show_envvar=True,
              help="int8: ONNX Runtime dynamic quantization (int8 LSTMs: ~1.3x faster, 4x smaller, scores "
                   "depend on batch neighbours). int8-embedding: per-row int8 embedding table only (3x smaller, "
                   "exact, not faster). Refused if validation accuracy drops more than --max-accuracy-drop.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, 21), default=DEFAULT_OPSET, show_default=True,
              show_envvar=True, help="ONNX opset of the exported graph.")
@click.option("--name", callback=_identifier, default=None, show_envvar=True,
              help="Model name in the manifest and in every prediction ('name@version'). "
                   "[default: the checkpoint directory's name]")
@click.option("--version", "model_version", is_flag=False, flag_value=_SHOW_TOOL_VERSION, default="1",
              show_default=True, show_envvar=True, envvar="LSTM_EXPORT_VERSION", is_eager=True, callback=_version,
              metavar="[VERSION]",
              help="Model version in the manifest ('name@version'). "
                   "`lstm-export --version` alone prints lstm-export's own version.")
@click.option("--parity-docs", type=click.IntRange(MIN_PARITY_DOCS), default=1024, show_default=True,
              show_envvar=True, help="Validation documents the parity gate compares (at least 512).")
@click.option("--parity-data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_envvar=True,
              help="Held-out documents for the gates, JSONL with 'text' and 'label' per line "
                   "[default: validation.jsonl in --checkpoint; needed for a model trained with --val-fraction 0].")
@click.option("--allow-batch-dependence", is_flag=True, show_envvar=True,
              help="With --quantize only: publish the int8 bundle even though its scores depend on the other "
                   "documents in a batch (dynamic int8 LSTM); the manifest records the measured difference.")
@click.option("--max-accuracy-drop", type=FiniteFloat(min=0.0), default=MAX_ACCURACY_DROP_POINTS,
              show_default=True, show_envvar=True, metavar="POINTS",
              help="With --quantize only: refuse the bundle if its validation accuracy falls below the fp32 "
                   "graph's by more than this many points, counting one standard error of the difference.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, show_envvar=True,
              help="ONNX Runtime threads for the gates (0 = ONNX Runtime's default).")
def main(checkpoint: Path, output: Path | None, store: Path | None, quantize: str | None, opset: int, name: str | None,
         model_version: str, parity_docs: int, parity_data: Path | None, allow_batch_dependence: bool,
         max_accuracy_drop: float, threads: int) -> None:
    """Export an lstm-train checkpoint to an ONNX model bundle and prove it answers like PyTorch.

    The bundle (model.onnx, vocab.json, labels.json, manifest.json with sha256 of
    every file) is built next to OUTPUT, then gated: ONNX Runtime must match
    PyTorch on >= 512 real validation documents (|Δp| <= 1e-4, identical argmax)
    and a short document must score the same alone and batched with long ones.
    A refused export leaves no bundle behind. The bundle carries a self-test
    (48 shuffled token-id inputs and PyTorch's probabilities) that every
    `lstm-worker` load re-runs on its own ONNX Runtime and provider.

    Exit status (docs/cli.md): 0 bundle written; 1 error while exporting (checkpoint
    unreadable, output exists...); 2 nothing done (a bad option, an --output that
    cannot be written); 3 refused by a gate (the report is printed to stderr).
    """
    # Refused only when typed: an environment that sets these for its int8 exports still exports fp32.
    if quantize is None and _on_command_line("allow_batch_dependence") and allow_batch_dependence:
        raise click.UsageError("--allow-batch-dependence only applies to --quantize int8 or int8-embedding; "
                               "fp32 bundles must be batch-invariant")
    if quantize is None and _on_command_line("max_accuracy_drop"):
        raise click.UsageError("--max-accuracy-drop only applies to --quantize int8 or int8-embedding")
    if (output is None) == (store is None):
        raise click.UsageError("give exactly one of --output DIR or --store DIR")
    if store is not None and click.get_current_context().get_parameter_source("model_version") in (
            click.core.ParameterSource.DEFAULT, None):
        raise click.UsageError("--store needs --version VERSION: it names the new version's directory")
    if store is not None and store.is_dir() and any(store.iterdir()) and not ModelStore.is_store(store):
        raise CannotStart(f"--store {store} holds files but is not a model store (no CURRENT or HISTORY): give a "
                          "new folder, or the store an earlier `lstm-export --store` made")
    unwritable = unwritable_reason(output if output is not None else store)
    if unwritable:
        raise CannotStart(f"{unwritable}: choose another {'--output' if output is not None else '--store'}")
    config = ExportConfig(checkpoint, output, quantize, opset, name, model_version, parity_docs, threads,
                          parity_data=parity_data, allow_batch_dependence=allow_batch_dependence, store=store,
                          max_accuracy_drop=max_accuracy_drop)
    try:
        bundle_dir = run_export(config, log=lambda line: click.echo(line, err=True))
    except GateError as exc:
        click.echo(f"lstm-export: REFUSED: {exc}", err=True)
        for key, value in exc.report.items():
            click.echo(f"  {key}: {value}", err=True)
        sys.exit(EXIT_PARTIAL)
    except (ExportError, ContractError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary(bundle_dir))
    if store is not None:
        current = ModelStore(store).current_version()
        click.echo(f"  store {store}: CURRENT is {model_version} (the store had none)" if current == model_version
                   else f"  store {store}: CURRENT stays {current}; serve {model_version} with: "
                        f"lstm-worker promote --store {store} {model_version}")
