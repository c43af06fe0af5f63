"""Readers for every data source ``lstm-train`` accepts. Torch-free.

Each reader returns :class:`Rows` (texts, label strings, bad rows); a row that
cannot be used is never dropped silently: it becomes a :class:`BadRow` naming
the file, line and reason, which the CLI reports.
"""

from __future__ import annotations

import csv
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from training.exceptions import DataError

NEWS_TRAIN_DIR, NEWS_TEST_DIR = "20news-bydate-train", "20news-bydate-test"
NEWS_ALIAS = "20newsgroups"
NEWS_ENCODING = "latin-1"  # the archive's files are latin-1 (sklearn reads them the same way)
TABULAR_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


@dataclass(frozen=True)
class BadRow:
    """A row that was not used, and why (``line`` is 1-based; 0 = not line-based)."""

    source: str
    line: int
    reason: str

    def to_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class Rows:
    texts: list[str]
    labels: list[str]
    bad_rows: list[BadRow]


def is_news_archive(path: Path) -> bool:
    """A bydate tarball or a folder holding the two bydate split folders."""
    if path.is_dir():
        return (path / NEWS_TRAIN_DIR).is_dir() and (path / NEWS_TEST_DIR).is_dir()
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def read_news_archive(path: Path) -> dict[str, Rows]:
    """``{"train": Rows, "test": Rows}`` from the archive; label = newsgroup name.

    Read straight from the tarball (no extraction). Documents are ordered by
    group and numeric id so every run sees the same order.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found; pass --data /path/to/20news-bydate.tar.gz or 20newsgroups")
    docs: dict[str, list[tuple[str, int, str, str]]] = {"train": [], "test": []}
    split_of = {NEWS_TRAIN_DIR: "train", NEWS_TEST_DIR: "test"}

    def add(parts: tuple[str, ...], payload: bytes) -> None:
        if len(parts) >= 3 and parts[-3] in split_of:
            split, group, name = split_of[parts[-3]], parts[-2], parts[-1]
            key = int(name) if name.isdigit() else sys.maxsize
            docs[split].append((group, key, name, payload.decode(NEWS_ENCODING)))

    if path.is_dir():
        for split_dir in (NEWS_TRAIN_DIR, NEWS_TEST_DIR):
            for file in (path / split_dir).glob("*/*"):
                if file.is_file():
                    add(file.parts, file.read_bytes())
    else:
        try:
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        handle = archive.extractfile(member)
                        if handle is not None:
                            add(tuple(member.name.strip("/").split("/")), handle.read())
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read the archive ({exc}); pass a 20news-bydate .tar.gz") from None
    if not docs["train"] or not docs["test"]:
        raise DataError(f"{path}: no {NEWS_TRAIN_DIR}/ and {NEWS_TEST_DIR}/ documents found; "
                        "pass the 20 Newsgroups bydate archive")
    result = {}
    for split, items in docs.items():
        items.sort()
        bad = [BadRow(f"{path}:{split}/{g}/{n}", 0, "empty text") for g, _, n, t in items if not t.strip()]
        kept = [(g, t) for g, _, _, t in items if t.strip()]
        result[split] = Rows([t for _, t in kept], [g for g, _ in kept], bad)
    return result


def fetch_news_online() -> dict[str, Rows]:
    """Download 20 Newsgroups with scikit-learn (needs internet the first time; cached afterwards)."""
    try:
        from sklearn.datasets import fetch_20newsgroups
    except ImportError:  # pragma: no cover - sklearn is in the train extra
        raise DataError("--data 20newsgroups needs scikit-learn: pip install 'lstm-worker[train]'") from None
    result = {}
    for split in ("train", "test"):
        try:
            bunch = fetch_20newsgroups(subset=split, remove=(), shuffle=False)
        except Exception as exc:  # network errors surface as many types; report one line
            raise DataError(f"could not download 20 Newsgroups ({type(exc).__name__}: {exc}); offline? "
                            "pass --data PATH/20news-bydate.tar.gz instead") from None
        names = list(bunch.target_names)
        rows = [(t, names[i]) for t, i in zip(bunch.data, bunch.target, strict=True)]
        bad = [BadRow(f"20newsgroups:{split}", n + 1, "empty text") for n, (t, _) in enumerate(rows) if not t.strip()]
        kept = [(t, y) for t, y in rows if t.strip()]
        result[split] = Rows([t for t, _ in kept], [y for _, y in kept], bad)
    return result


def _column(header: list[str], field: str, path: Path, role: str) -> int:
    if field in header:
        return header.index(field)
    if field.isdigit() and int(field) >= 1:
        return int(field) - 1  # 1-based column number: the file has no header row
    separator = next((sep for sep in (";", "\t", ",", "|") if len(header) == 1 and sep in header[0]), None)
    if separator is not None:
        raise DataError(f"{path}: the header {header[0][:80]!r} is one column that looks {separator!r}-separated; "
                        "save the file comma-separated as .csv or tab-separated as .tsv")
    raise DataError(
        f"{path}: no {role} column {field!r} in the header {header[:8]}; pass --{role}-field NAME "
        f"(or column numbers, e.g. --text-field 2 --label-field 1, for a file without a header row)"
    )


def read_table(path: Path, delimiter: str, text_field: str, label_field: str) -> Rows:
    """CSV/TSV with a header row (or, when both fields are column numbers, without one)."""
    csv.field_size_limit(sys.maxsize)  # newsgroup-sized texts exceed csv's 128 KiB default
    texts: list[str] = []
    labels: list[str] = []
    bad: list[BadRow] = []
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        # TSV (IANA text/tab-separated-values) has no quoting: a '"' inside a text is just a character.
        # Treating it as a quote would silently glue rows together.
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        headerless = text_field.isdigit() and label_field.isdigit()
        try:
            header = [] if headerless else next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        header = [h.strip() for h in header]
        text_col = _column(header, text_field, path, "text")
        label_col = _column(header, label_field, path, "label")
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank lines are layout, not data
                if max(text_col, label_col) >= len(row):
                    bad.append(BadRow(str(path), line, f"unparsable line ({len(row)} fields)"))
                    continue
                text, label = row[text_col], row[label_col].strip()
                if not text.strip():
                    bad.append(BadRow(str(path), line, "empty text"))
                elif not label:
                    bad.append(BadRow(str(path), line, "missing label"))
                else:
                    texts.append(text)
                    labels.append(label)
        except csv.Error as exc:
            bad.append(BadRow(str(path), reader.line_num, f"unparsable line (rest of file skipped: {exc})"))
    return Rows(texts, labels, bad)


def read_jsonl(path: Path, text_field: str, label_field: str) -> Rows:
    """One JSON object per line."""
    texts: list[str] = []
    labels: list[str] = []
    bad: list[BadRow] = []
    seen_fields: set[str] = set()
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(BadRow(str(path), line_no, f"unparsable line ({exc.msg})"))
                continue
            if not isinstance(record, dict):
                bad.append(BadRow(str(path), line_no, "unparsable line (not a JSON object)"))
                continue
            seen_fields.update(record)
            text, label = record.get(text_field), record.get(label_field)
            if text is None or (isinstance(text, str) and not text.strip()):
                bad.append(BadRow(str(path), line_no, "empty text"))
            elif not isinstance(text, str):
                bad.append(BadRow(str(path), line_no, f"empty text ({text_field!r} is not a string)"))
            elif label is None or (isinstance(label, str) and not label.strip()):
                bad.append(BadRow(str(path), line_no, "missing label"))
            elif isinstance(label, dict | list):
                bad.append(BadRow(str(path), line_no, "missing label (not a string or number)"))
            else:
                texts.append(text)
                labels.append(str(label).strip())
    for field, role in ((text_field, "text"), (label_field, "label")):
        if seen_fields and field not in seen_fields:
            raise DataError(f"{path}: no record has a {role} field {field!r} (fields seen: "
                            f"{sorted(seen_fields)[:8]}); pass --{role}-field NAME")
    return Rows(texts, labels, bad)


def read_labelled_file(path: Path, text_field: str, label_field: str) -> Rows:
    """Dispatch on the file suffix: .csv, .tsv/.tab, .jsonl/.ndjson/.json."""
    suffix = path.suffix.lower()
    if suffix in TABULAR_SUFFIXES:
        return read_table(path, TABULAR_SUFFIXES[suffix], text_field, label_field)
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(path, text_field, label_field)
    raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl or the 20news-bydate archive")
