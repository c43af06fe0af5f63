"""Every float option of every command refuses nan and inf (click's FloatRange lets nan through any bound)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from core.cli_types import FiniteFloat
from export.cli import main as export_main
from training.cli import main as train_main
from worker.broker_command import broker
from worker.classify_command import classify
from worker.models_command import models, promote
from worker.run_command import run


def _commands() -> list[tuple[list[str], click.Command]]:
    found = [(["lstm-train"], train_main), (["lstm-export"], export_main)]
    # worker.cli's group itself cannot be imported in-process here: tests/worker shadows the package name.
    return found + [(["lstm-worker", command.name], command) for command in (run, classify, broker, promote, models)]


FLOAT_OPTIONS = [(path, command, param) for path, command in _commands() for param in command.params
                 if isinstance(param, click.Option) and isinstance(param.type, click.types.FloatParamType)]


def test_there_are_float_options_to_check() -> None:
    names = {param.name for _, _, param in FLOAT_OPTIONS}
    assert {"lr", "min_confidence", "max_accuracy_drop", "shadow_sample"} <= names


@pytest.mark.parametrize(("path", "command", "param"), FLOAT_OPTIONS,
                         ids=[f"{' '.join(path)} {param.opts[0]}" for path, _, param in FLOAT_OPTIONS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite_values(path, command, param, value) -> None:
    name = f"{' '.join(path)} {param.opts[0]}"
    assert isinstance(param.type, FiniteFloat), f"{name} is a float option without FiniteFloat"
    result = CliRunner().invoke(command, [param.opts[0], value])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and param.opts[0] in result.output


def test_finite_float_keeps_click_bounds_and_help() -> None:
    bounded = FiniteFloat(0.0, 1.0, max_open=True)
    assert bounded.convert("0.25", None, None) == 0.25
    with pytest.raises(click.BadParameter, match="not in the range 0.0<=x<1.0"):
        bounded.convert("1", None, None)
    with pytest.raises(click.BadParameter, match="'nan' is not a finite number"):
        bounded.convert("nan", None, None)
    assert (bounded.name, FiniteFloat().name) == ("float range", "float")
    assert FiniteFloat()._describe_range() == "" and bounded._describe_range() == "0.0<=x<1.0"
