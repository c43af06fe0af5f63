"""What lstm-train checks and cleans around a run: the output folder before, signals and failures during.

- An --output that cannot be written, or that already holds files, is refused before any work
  (a finished model is never overwritten by accident: --resume continues it, --overwrite replaces it).
- Ctrl-C and SIGTERM stop every member process (the pool is terminated as the exception leaves it)
  and end with exit 130 / 143 and one line saying how to continue.
- A run that fails or is stopped before writing anything leaves no empty folder behind.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from core.exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED, CannotStart
from core.output_paths import unwritable_reason


class Terminated(Exception):
    """SIGTERM arrived: raised in the main thread, so every ``with`` block (the member pool's too) unwinds."""


def check_output(output: str, resume: bool, overwrite: bool) -> None:
    folder = Path(output)
    reason = unwritable_reason(folder)
    if reason:
        raise CannotStart(f"--output: {reason}")
    if not resume and not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise CannotStart(f"--output {folder} already holds files (an earlier run?): continue that run with "
                          "--resume, replace its files with --overwrite, or choose a new folder")


def _empty_folders_removed(folder: Path) -> None:
    """Remove ``folder`` if nothing but empty folders is in it (a run that wrote no file)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir():
            _empty_folders_removed(child)
    if not any(folder.iterdir()):
        folder.rmdir()


def _raise_terminated(*_: object) -> None:
    raise Terminated


@contextmanager
def guarded_run(output: str) -> Iterator[None]:
    """The training run inside: signals become one line and an exit code; an empty new folder goes."""
    folder = Path(output).absolute()
    created = folder if not folder.exists() else None  # the topmost folder this run will create
    while created is not None and not created.parent.exists():
        created = created.parent
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except BaseException as exc:
        if created is not None:
            _empty_folders_removed(created)
        if isinstance(exc, KeyboardInterrupt | Terminated):
            name, code = ("Ctrl-C", EXIT_INTERRUPTED) if isinstance(exc, KeyboardInterrupt) else \
                ("SIGTERM", EXIT_TERMINATED)
            resume = "run the same command with --resume to continue" if folder.is_dir() else \
                "nothing was written; run the command again"
            click.echo(f"lstm-train: stopped by {name}; every member process has ended; {resume}", err=True)
            sys.exit(code)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
