"""A model store: a directory of immutable bundle versions and a ``CURRENT`` pointer to the one served.

Layout (docs/models.md)::

    STORE/
      CURRENT        one line: the version served
      HISTORY        append-only JSON lines, one per change of CURRENT
      1/             a bundle (manifest.json, model.onnx, ...); the directory name is the version
      2/

Like Triton's model repository, each version is its own directory, but the
version served is named explicitly (``CURRENT``) rather than by a version
policy such as "the highest number": publishing a version (``lstm-export
--store``) and deploying it (``lstm-worker promote``, after a self-test on the
serving machine) stay separate steps, and a rollback is one pointer change.

Every change is atomic on a POSIX filesystem: a version directory appears by
``rename`` of a fully written sibling; ``CURRENT`` is replaced by writing a
temporary file, fsync, ``rename``, fsync of the directory. Readers therefore
never see a half-written version or an empty ``CURRENT``. Writers (promote,
the first export) serialize on an ``flock`` of ``STORE/.lock``.

This module verifies nothing itself and imports neither torch nor ONNX Runtime:
``promote`` takes a ``verify`` callable (the worker's self-test) that runs under
the lock and must raise to refuse.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.exceptions import StoreError

# core.bundle.MANIFEST_FILE, not imported: core.bundle pulls in numpy, and a hot-swap watcher
# polling current_version() should need nothing but the standard library.
MANIFEST_FILE = "manifest.json"
CURRENT_FILE, HISTORY_FILE, LOCK_FILE = "CURRENT", "HISTORY", ".lock"
# The same rule as lstm-export's --version: it is also a directory name, so no '/', no leading '.'.
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
Verify = Callable[[Path], Mapping[str, Any]]


def check_version_name(version: str) -> str:
    if not VERSION_RE.fullmatch(version) or version in (CURRENT_FILE, HISTORY_FILE):
        raise StoreError(f"invalid version {version!r}: use letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit")
    return version


def _natural_key(version: str) -> list[tuple[int, int | str]]:
    """Numbers compare as numbers: 2 < 10, 1.9 < 1.10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", version) if part]


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class ModelStore:
    """A store directory. Cheap to construct; every read goes to the filesystem (no caching)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def is_store(path: str | Path) -> bool:
        """A store is recognised by what only a store's own writes make: ``CURRENT`` or ``HISTORY``.

        A folder that merely holds bundles (a user's working folder) is not one, so nothing
        writes CURRENT or HISTORY into it; a store whose CURRENT was lost still has its HISTORY.
        """
        return (Path(path) / CURRENT_FILE).is_file() or (Path(path) / HISTORY_FILE).is_file()

    def current_version(self) -> str | None:
        """The version ``CURRENT`` names (re-read on every call: one small file), None if it has none yet."""
        try:
            text = (self.path / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.path / CURRENT_FILE}: unreadable ({exc})") from None
        if not VERSION_RE.fullmatch(text):
            raise StoreError(f"{self.path / CURRENT_FILE}: does not name a version ({text[:80]!r}); "
                             "run lstm-worker promote --store to repair it")
        return text

    def versions(self) -> list[str]:
        """Complete versions, oldest name first (natural order); in-progress exports are hidden dot-directories."""
        if not self.path.is_dir():
            raise StoreError(f"model store not found: {self.path} is not a directory")
        return sorted((p.name for p in self.path.iterdir()
                       if p.is_dir() and VERSION_RE.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()),
                      key=_natural_key)

    def bundle_path(self, version: str) -> Path:
        """The bundle directory of ``version``; :class:`StoreError` if the store has no such version."""
        path = self.path / check_version_name(version)
        if not (path / MANIFEST_FILE).is_file():
            known = ", ".join(self.versions()) or "none"
            raise StoreError(f"{self.path}: no version {version!r} in this store (versions: {known})")
        return path

    def current_bundle_path(self) -> Path:
        version = self.current_version()
        if version is None:
            raise StoreError(f"{self.path}: the store has no CURRENT version; promote one with "
                             f"lstm-worker promote --store {self.path} VERSION")
        return self.bundle_path(version)

    def history(self) -> list[dict[str, Any]]:
        """Every change of CURRENT, oldest first; a torn last line (crash while appending) is skipped."""
        try:
            lines = (self.path / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("version"), str):
                entries.append(entry)
        return entries

    def previous(self) -> str | None:
        """The version served before the current one, as a rollback would restore it; None if there is none.

        The history is replayed as a stack: a promotion pushes, a rollback pops. So repeated
        rollbacks walk further back (3 -> 2 -> 1) instead of toggling between two versions.
        """
        stack: list[str] = []
        for entry in self.history():
            if entry.get("action") == "rollback" and stack:
                stack.pop()
                if stack and stack[-1] == entry["version"]:
                    continue
            stack.append(entry["version"])
        current = self.current_version()
        if current is not None and (not stack or stack[-1] != current):
            stack.append(current)  # CURRENT changed without a history line (crash in between, hand edit)
        present = set(self.versions())
        return next((v for v in reversed(stack[:-1]) if v != current and v in present), None)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialize writers of CURRENT and HISTORY (promote, rollback, the first export)."""
        with open(self.path / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def promote(self, version: str, *, verify: Verify | None = None, action: str = "promote",
                only_if_empty: bool = False) -> dict[str, Any] | None:
        """Point CURRENT at ``version`` after ``verify(bundle_path)`` returned; append the HISTORY line.

        ``verify`` raises to refuse (CURRENT is then untouched); what it returns (e.g. the self-test's
        max |Δp| and provider) is recorded in the history line, which is returned. With
        ``only_if_empty`` nothing happens (None) when the store already has a CURRENT.
        """
        path = self.bundle_path(version)
        with self.lock():
            previous = self.current_version()
            if only_if_empty and previous is not None:
                return None
            details = dict(verify(path)) if verify is not None else {}
            self._write_current(version)
            entry = {"version": version, "previous": previous, "action": action,
                     "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "by": _who(), **details}
            self._append_history(entry)
        return entry

    def rollback(self, *, verify: Verify | None = None) -> dict[str, Any]:
        """Promote :meth:`previous` (checked by ``verify`` like any promotion)."""
        target = self.previous()
        if target is None:
            raise StoreError(f"{self.path}: nothing to roll back to: no earlier version in HISTORY is still in "
                             "the store")
        return self.promote(target, verify=verify, action="rollback")  # type: ignore[return-value]

    def last_promoted_at(self) -> dict[str, str]:
        """version -> when it last became CURRENT (UTC, ISO 8601)."""
        return {entry["version"]: str(entry.get("promoted_at", "")) for entry in self.history()}

    def _write_current(self, version: str) -> None:
        temporary = self.path / f".{CURRENT_FILE}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / CURRENT_FILE)  # atomic: readers see the old or the new name
        _fsync_directory(self.path)

    def _append_history(self, entry: Mapping[str, Any]) -> None:
        fd = os.open(self.path / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def resolve_model(path: str | Path) -> tuple[Path, ModelStore | None]:
    """``(bundle directory, store or None)`` for ``--model``: a bundle directory, or a store (its CURRENT)."""
    path = Path(path)
    if ModelStore.is_store(path):
        store = ModelStore(path)
        return store.current_bundle_path(), store
    if path.is_dir() and not (path / MANIFEST_FILE).exists():
        bundles = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())
        if bundles:
            raise StoreError(f"{path} is neither a bundle nor a model store (it holds the bundle folder "
                             f"{bundles[0]!r}{' and others' if len(bundles) > 1 else ''}): give the bundle "
                             f"folder itself, e.g. {path / bundles[0]}")
    return path, None  # load_bundle says what is wrong with anything else
