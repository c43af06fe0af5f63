"""Click parameter types that every command (lstm-train, lstm-export, lstm-worker) shares."""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A float option that refuses ``nan`` and ``inf``, within optional bounds (click's ``FloatRange`` arguments).

    Why not click's own: ``float("nan")`` compares false with every bound, so ``FloatRange`` lets
    ``nan`` through any range. ``--lr nan`` would train a model of NaNs, ``--min-confidence nan``
    would silently turn review routing off and ``--max-accuracy-drop nan`` would disable the int8 gate.
    """

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False) -> None:
        super().__init__(min, max, min_open, max_open)
        self.name = "float" if min is None and max is None else "float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()
