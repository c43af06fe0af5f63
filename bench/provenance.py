"""What a result file says about how it was made: the command as a user would type it, paths portable.

A result file is read on other machines, so it records ``python -m bench.<name> <arguments>`` with every
path written the way the reader can use it: the variable that supplied it (``$LSTM_TRAIN_DATA``,
``$SMS_DATA``), else relative to the repository (``../shared/data/...`` for the copy beside it), else
under ``$TMPDIR`` or ``~``, never the absolute path of the machine that ran the benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_VARIABLES = ("LSTM_TRAIN_DATA", "SMS_DATA")


def portable_path(text: str) -> str:
    """``text`` if it is not an absolute path, else the same path as a user would type it."""
    if not text.startswith("/"):
        return text
    path = os.path.normpath(text)
    for variable in DATA_VARIABLES:
        value = os.environ.get(variable, "")
        if value.startswith("/") and (path == os.path.normpath(value)):
            return f"${variable}"
    bases = ((ROOT, None), (ROOT.parent, None), (Path(tempfile.gettempdir()), "$TMPDIR"), (Path.home(), "~"))
    # The deepest base that holds the path names it best (a clone in /tmp has its parent and $TMPDIR alike).
    holding = [(base, spelled) for base, spelled in bases if path == str(base) or path.startswith(str(base) + os.sep)]
    if not holding:
        return text
    base, spelled = max(holding, key=lambda found: len(found[0].parts))  # max keeps the first of equals
    relative = os.path.relpath(path, base if spelled else ROOT)
    return relative if spelled is None else f"{spelled}/{relative}"


def portable(value: Any) -> Any:
    """``value`` (a result: dicts, lists, strings) with every absolute path and command made portable."""
    if isinstance(value, dict):
        return {key: (portable_command(item) if key == "command" and isinstance(item, str) else portable(item))
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable(item) for item in value]
    return portable_path(value) if isinstance(value, str) else value


def portable_command(command: str) -> str:
    return _join(portable_path(word) for word in shlex.split(command))


def command_line(module: str, argv: list[str] | None = None) -> str:
    """``python -m <module> <arguments>`` for this run, paths made portable."""
    return _join(portable_path(word) for word in ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def _join(words: Iterable[str]) -> str:
    # A variable or ~ stays unquoted, so the shell expands it when the command is pasted.
    return " ".join(word if word.startswith(("$", "~/")) and " " not in word else shlex.quote(word) for word in words)


def write_result(path: Path, result: dict, indent: int = 2) -> Path:
    """Write ``result`` as JSON with its paths made portable; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(result), indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
