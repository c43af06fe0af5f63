"""Whether an output folder can be written, found before any work starts (lstm-train, lstm-export).

A path under a file, or in a folder this user cannot write, would otherwise fail with a traceback
after minutes of training or export work.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def unwritable_reason(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be created and written, in a few words; None when it can.

    The check creates (and removes) a temporary folder in the nearest existing ancestor, so it
    sees what the filesystem allows (read-only mounts, ACLs, root's rights), not only mode bits.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    ancestor = folder.absolute()
    while not ancestor.exists():  # a path under a file does not exist either: the loop stops at the file
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lstm-write-check-", dir=ancestor))
    except OSError as exc:
        return f"cannot write in {ancestor} ({exc.strerror or exc})"
    return None
