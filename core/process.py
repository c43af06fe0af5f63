"""A child process that must not outlive the process that started it (Tansu, training members)."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Called in the child: the kernel sends it SIGKILL when the thread that started it dies (Linux only).

    It covers what no handler can: a parent killed with SIGKILL. Without it such a child keeps
    running in the background (a broker holding its port, a member still writing checkpoints).
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
