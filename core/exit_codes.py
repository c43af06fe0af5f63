"""Exit codes: one meaning each, the same in lstm-train, lstm-export and every lstm-worker command.

docs/cli.md lists them for users. A command uses the ones that can happen to it.
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1  # failed while working (a broker refused, a file could not be written, a bug)
EXIT_CANNOT_START = 2  # nothing was done: a bad option, input, bundle, output folder, broker or topic
EXIT_PARTIAL = 3  # finished, but refused its result (an export gate) or some inputs (classify's error records)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) stopped a job that does not finish by itself being stopped
EXIT_TERMINATED = 143  # SIGTERM stopped such a job


class CannotStart(click.ClickException):
    """A user error found before any work: one line naming the fix, no traceback, exit 2."""

    exit_code = EXIT_CANNOT_START
