"""Child processes that cannot outlive the Python process that started them (Linux).

``die_with_parent`` runs in the child between fork and exec: the kernel SIGKILLs the child when the thread that
forked it exits, however it exits (SIGKILL included), so a broker JVM is never left behind by a test run that
was killed. Start such children from the main thread: the kernel watches the forking thread, not the process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent_function(parent_pid: int):  # noqa: ANN201 - a preexec_fn
    """A ``preexec_fn`` that arms PR_SET_PDEATHSIG; ``parent_pid`` is the starter's pid, read before the fork."""
    def die_with_parent() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before the guard was armed
            os._exit(1)
    return die_with_parent


def stop_group(pid: int, grace_s: float, wait: Callable[[float | None], int]) -> int:
    """SIGTERM the process group ``pid`` leads (SIGCONT too, in case a test froze it), then SIGKILL after
    ``grace_s``; returns the leader's exit code as ``wait`` reports it."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _signal_group(pid, sig)
    try:
        return wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(pid, signal.SIGKILL)
        return wait(None)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
