"""Loading labelled text for training and evaluation. Torch-free on purpose.

``bench/``, the demo and ``lstm-export`` reuse :func:`load_dataset` to read
the same splits the model was trained and tested on, without importing torch.

Sources (see :mod:`training.readers`): the 20 Newsgroups "bydate" archive
(tarball or extracted folder), ``20newsgroups`` (downloaded with
scikit-learn), or a CSV/TSV/JSONL file.

Labels in a :class:`Dataset` are integer indices into ``label_names``
(the sorted label strings), so ``label_names[train_labels[i]]`` is the label text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.exceptions import DataError
from training.readers import (
    NEWS_ALIAS,
    NEWS_TEST_DIR,
    NEWS_TRAIN_DIR,
    BadRow,
    Rows,
    fetch_news_online,
    is_news_archive,
    read_labelled_file,
    read_news_archive,
)
from training.splits import stratified_split, stratified_subsample

DEFAULT_TEST_FRACTION = 0.2
# The test part of a file without --test-data is drawn with this seed, not --seed: runs with other seeds
# (other validation folds, initialisations) are then scored on the same documents, and no seed is
# ever tried against another on its own test split.
TEST_SPLIT_SEED = 0

__all__ = ["BadRow", "Dataset", "load_dataset", "split_validation", "validation_indices", "load_evaluation_rows",
           "read_source", "stratified_split", "stratified_subsample"]


@dataclass
class Dataset:
    """Train / validation / test texts with integer labels indexing ``label_names``."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    label_names: list[str]
    val_texts: list[str] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    source: str = ""
    test_source: str = ""

    def summary(self) -> dict:
        return {"source": self.source, "test_source": self.test_source, "train": len(self.train_texts),
                "validation": len(self.val_texts), "test": len(self.test_texts),
                "classes": len(self.label_names), "bad_rows": len(self.bad_rows)}


def read_source(data: str | Path, text_field: str = "text", label_field: str = "label") -> dict[str, Rows]:
    """``{"train": Rows}`` for a file; ``{"train": Rows, "test": Rows}`` for 20 Newsgroups."""
    if str(data) == NEWS_ALIAS:
        return fetch_news_online()
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"data not found: {path} (pass a CSV/TSV/JSONL file, the 20news-bydate archive, "
                        f"or {NEWS_ALIAS!r})")
    if is_news_archive(path):
        return read_news_archive(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder without {NEWS_TRAIN_DIR}/ and {NEWS_TEST_DIR}/; "
                        "pass a data file or the bydate archive")
    return {"train": read_labelled_file(path, text_field, label_field)}


def _check_usable(rows: Rows, source: str) -> None:
    if not rows.texts:
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(b.reason.split(" (")[0] for b in rows.bad_rows).items())
        raise DataError(f"{source}: no usable rows ({reasons or 'the file has no data rows'}); "
                        "check the file and --text-field/--label-field")


def _take(values: Sequence, index: np.ndarray) -> list:
    return [values[i] for i in index]


def _index_labels(rows: Rows, index: dict[str, int], source: str) -> tuple[list[str], list[int], list[BadRow]]:
    """Map label names to indices; a label the model/training data lacks makes a bad row (reported, not hidden)."""
    texts, labels, bad = [], [], []
    for number, (text, label) in enumerate(zip(rows.texts, rows.labels, strict=True), start=1):
        if label in index:
            texts.append(text)
            labels.append(index[label])
        else:
            bad.append(BadRow(source, number, f"unknown label ({label!r} is not a training label; row {number})"))
    return texts, labels, bad


def validation_indices(labels: Sequence[int], fraction: float, seed: int,
                       fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted indices: validation fold ``fold`` of the training part (none at fraction 0).

    One definition for the single model (fold 0, via ``load_dataset``) and an ensemble's members
    (fold k each), so member 1 validates on exactly the documents a single model would.
    """
    if fraction <= 0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    return stratified_split(np.asarray(labels), fraction, seed + 1, fold=fold)


def split_validation(texts: Sequence[str], labels: Sequence[int], fraction: float, seed: int,
                     fold: int = 0) -> tuple[list[str], list[int], list[str], list[int]]:
    """``(train_texts, train_labels, val_texts, val_labels)``: :func:`validation_indices` applied to the texts."""
    kept, held = validation_indices(labels, fraction, seed, fold)
    return (_take(texts, kept), [int(labels[i]) for i in kept], _take(texts, held), [int(labels[i]) for i in held])


def load_dataset(
    data: str | Path,
    test_data: str | Path | None = None,
    text_field: str = "text",
    label_field: str = "label",
    *,
    val_fraction: float = 0.0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_train_samples: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Read ``data`` (and ``test_data``) into stratified train / validation / test splits.

    - 20 Newsgroups: its bydate train/test split (``test_data``, when given, replaces the test part).
    - A file: ``test_data`` when given, else a stratified ``test_fraction`` of ``data`` held out, the
      same documents whatever ``seed`` is (:data:`TEST_SPLIT_SEED`).
    - ``max_train_samples``: stratified subsample of the training part (taken before validation).
    - ``val_fraction``: stratified validation split taken from the training part (``lstm-train`` uses 0.1).

    Raises :class:`DataError` (one line, naming the fix) for a missing file or
    column, no usable texts, or fewer than two classes. Unusable rows are kept
    in ``bad_rows`` with file, line and reason.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 < test_fraction < 1.0:
        raise DataError("val_fraction must be in [0, 1) and test_fraction in (0, 1)")
    parts = read_source(data, text_field, label_field)
    train = parts["train"]
    _check_usable(train, str(data))
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise DataError(f"{data}: the training data has a single class ({label_names[0]!r}); a classifier needs "
                        "at least two (check --label-field)")
    index = {name: i for i, name in enumerate(label_names)}
    texts, labels = list(train.texts), [index[y] for y in train.labels]
    bad_rows = list(train.bad_rows)
    if test_data is not None:
        test_path = Path(test_data).expanduser()
        if not test_path.is_file():
            raise DataError(f"test data not found: {test_path}")
        test_rows = read_labelled_file(test_path, text_field, label_field)
        _check_usable(test_rows, str(test_path))
        test_texts, test_labels, unknown = _index_labels(test_rows, index, str(test_path))
        bad_rows += [*test_rows.bad_rows, *unknown]
        test_source = str(test_path)
    elif "test" in parts:
        test_texts, test_labels, unknown = _index_labels(parts["test"], index, f"{data}:test")
        bad_rows += [*parts["test"].bad_rows, *unknown]
        test_source = f"{data} (bydate test split)"
    else:
        kept, held = stratified_split(np.asarray(labels), test_fraction, TEST_SPLIT_SEED)
        test_texts, test_labels = _take(texts, held), _take(labels, held)
        texts, labels = _take(texts, kept), _take(labels, kept)
        test_source = f"{data} (stratified {test_fraction:.0%} held out, fixed seed {TEST_SPLIT_SEED})"
    if not test_texts:
        raise DataError(f"{test_source}: no test rows with a label seen in training; pass --test-data FILE")

    if max_train_samples is not None and max_train_samples < len(texts):
        if max_train_samples < 2 * len(label_names):
            raise DataError(f"--max-train-samples {max_train_samples} is too small for {len(label_names)} "
                            f"classes; use at least {2 * len(label_names)}")
        chosen = stratified_subsample(np.asarray(labels), max_train_samples, seed)
        texts, labels = _take(texts, chosen), _take(labels, chosen)
    texts, labels, val_texts, val_labels = split_validation(texts, labels, val_fraction, seed)
    return Dataset(
        train_texts=texts, train_labels=[int(y) for y in labels], test_texts=test_texts,
        test_labels=test_labels, label_names=label_names, val_texts=val_texts,
        val_labels=[int(y) for y in val_labels], bad_rows=bad_rows, source=str(data), test_source=test_source,
    )


def load_evaluation_rows(data: str | Path, label_names: Sequence[str], text_field: str = "text",
                         label_field: str = "label") -> tuple[list[str], list[int], list[BadRow]]:
    """Texts, label indices (into ``label_names``) and bad rows to evaluate a trained model on.

    20 Newsgroups gives its bydate test split; a file is used whole.
    """
    parts = read_source(data, text_field, label_field)
    rows = parts.get("test", parts["train"])
    _check_usable(rows, str(data))
    texts, labels, unknown = _index_labels(rows, {n: i for i, n in enumerate(label_names)}, str(data))
    if not texts:
        raise DataError(f"{data}: none of its labels are known to the model ({', '.join(list(label_names)[:5])}, ...)")
    return texts, labels, [*rows.bad_rows, *unknown]
