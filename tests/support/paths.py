"""Paths a test needs the file system to refuse."""

from __future__ import annotations

import os
from pathlib import Path


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: mode 555, or for root (whom modes do not stop) /proc."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder
