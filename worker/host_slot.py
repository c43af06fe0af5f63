"""A per-host slot number for this process: the lowest one no other live worker of the group holds.

The default transactional id is ``<group>-<hostname>-<slot>``. It must be unique
among live workers (two workers with one id fence each other) and should stay
the same across a restart (the successor then aborts its predecessor's open
transaction at once instead of leaving read_committed readers waiting for the
transaction timeout). A slot is held through an advisory lock on a file in the
temporary directory, which the kernel releases when the process dies, however
it dies: one worker per pod always gets slot 0; two on one machine get 0 and 1,
and a restarted one takes the lowest free slot, usually its old one.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import IO

MAX_SLOTS = 256
_held: list[IO[bytes]] = []  # the locks live as long as the process


def claim_host_slot(group_id: str, directory: str | None = None) -> int | None:
    """Lock and return the lowest free slot for ``group_id`` on this host; None if no lock file can be made."""
    safe_group = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)[:100]
    root = Path(directory or tempfile.gettempdir())
    for slot in range(MAX_SLOTS):
        path = root / f"lstm-worker-{safe_group}-{slot}.lock"
        try:
            handle = open(path, "ab")  # noqa: SIM115 - held open for the life of the process
        except OSError:
            return None  # read-only or missing temporary directory
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        os.set_inheritable(handle.fileno(), False)
        _held.append(handle)
        return slot
    return None
