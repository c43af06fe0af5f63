"""Members trained in this process or side by side in processes of their own (``--jobs``).

A member process never outlives the run: Ctrl-C and SIGTERM reach the parent, which terminates the
pool (training.run_guard turns them into one line and exit 130/143), and a member dies with a parent
killed outright.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
import traceback
from dataclasses import replace

import torch

from core.exit_codes import EXIT_TERMINATED
from core.process import die_with_parent
from training.checkpoint import LAST_FILE
from training.config import TrainConfig
from training.trainer import Log, MemberFit, MemberJob, fit_member


def train_member(config: TrainConfig, job: MemberJob, quiet: bool, log: Log | None = None) -> MemberFit:
    """One member, in its own process or in this one."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    # As an LSTM learns, its saturated gates pass subnormal floats through backpropagation, which x86 CPUs
    # compute many times slower than normal ones; flushed to zero, late epochs run as fast as the first.
    torch.set_flush_denormal(True)
    if job.output:
        job.output.mkdir(parents=True, exist_ok=True)
        if config.resume and job.name and not (job.output / LAST_FILE).is_file():
            config = replace(config, resume=False)  # interrupted before this member's first epoch ended
    if quiet:
        log = silent
    elif log is None or job.name:
        log = _Prefixed(job.name)
    return fit_member(config, job, torch.device(config.device), log)


def silent(line: str) -> None:
    pass


class _Prefixed:
    """A member's log lines on stdout, tagged with its name (picklable, for member processes)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, line: str) -> None:
        print(f"[{self.name}] {line}", flush=True)


def _member_process_setup() -> None:
    """A member process leaves Ctrl-C to the parent, which stops the pool, and dies if the parent is killed.

    The pool stops members with SIGTERM; exiting through Python (not the signal's default action) runs
    the process's finalizers, which release its semaphores instead of leaving them to the resource
    tracker's warning.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_member)
    die_with_parent()


def _exit_member(*_: object) -> None:
    sys.exit(EXIT_TERMINATED)


def fit_in_processes(config: TrainConfig, jobs: list[MemberJob], processes: int, quiet: bool) -> list[MemberFit]:
    """Members in ``processes`` processes; the first member that fails stops the others and raises its error."""
    # spawn, not fork: a forked child would inherit this process's PyTorch thread pool state.
    pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_member_process_setup)
    pending = []
    try:
        pending = [pool.apply_async(train_member, (config, job, quiet)) for job in jobs]
        while not all(p.ready() for p in pending):
            for member in pending:
                if member.ready() and not member.successful():
                    member.get()  # raises its exception; the others are terminated below
            time.sleep(0.5)
        fits = [p.get() for p in pending]
        pool.close()
    except BaseException as exc:  # a member's error, Ctrl-C or SIGTERM (training.run_guard): no member goes on
        pool.terminate()
        traceback.clear_frames(exc.__traceback__)  # the frames it came through hold pending results (below)
        raise
    finally:
        # Joined, the workers release their semaphores themselves; and the pool (which each pending result
        # references) is dropped here, not kept alive by a traceback until exit, where the resource tracker
        # would warn of leaked semaphores.
        pool.join()
        del pool, pending
    return fits
