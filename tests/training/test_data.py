"""Data loading: formats, bad rows, clear errors, stratified splits, the real archive. All torch-free."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.data import load_dataset, load_evaluation_rows
from training.exceptions import DataError
from training.splits import stratified_split, stratified_subsample


def test_csv_with_bad_rows_counts_every_one(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        'body,queue,extra\n'
        '"refund please, order late",billing,x\n'
        ',billing,x\n'                       # empty text
        'printer is on fire,,x\n'            # missing label
        'short row\n'                        # too few fields
        '"multi\nline text",it,x\n'
        'vpn broken,it,x\n'
        'card charged twice,billing,x\n'
        'laptop dead,it,x\n',
        encoding="utf-8",
    )
    data = load_dataset(path, text_field="body", label_field="queue", test_fraction=0.3)
    assert data.label_names == ["billing", "it"]
    assert len(data.train_texts) + len(data.test_texts) == 5
    assert "multi\nline text" in data.train_texts + data.test_texts
    reasons = Counter(row.reason.split(" (")[0] for row in data.bad_rows)
    assert reasons == {"empty text": 1, "missing label": 1, "unparsable line": 1}
    assert sorted(row.line for row in data.bad_rows) == [3, 4, 5]


def test_tsv_without_header_by_column_numbers(tmp_path: Path) -> None:
    path = tmp_path / "spam.tsv"
    path.write_text("ham\thello there\nspam\tWIN a prize now\nham\tsee you\nspam\tfree money\n", encoding="utf-8")
    data = load_dataset(path, text_field="2", label_field="1", test_fraction=0.5)
    assert data.label_names == ["ham", "spam"]
    assert sorted(data.train_texts + data.test_texts) == ["WIN a prize now", "free money", "hello there", "see you"]


def test_jsonl_bad_lines_and_numeric_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "good one", "label": 1}\n'
        '{"text": "bad one", "label": 0}\n'
        'this is not json\n'
        '["a list"]\n'
        '{"text": "", "label": 1}\n'
        '{"text": "no label"}\n'
        '\n'
        '{"text": "fine", "label": 0}\n'
        '{"text": "great", "label": 1}\n',
        encoding="utf-8",
    )
    data = load_dataset(path, test_fraction=0.5)
    assert data.label_names == ["0", "1"]
    assert len(data.train_texts) + len(data.test_texts) == 4
    assert sorted((r.line, r.reason.split(" (")[0]) for r in data.bad_rows) == [
        (3, "unparsable line"), (4, "unparsable line"), (5, "empty text"), (6, "missing label")]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "not found"),
        ("text,label\nhello,a\n", {"label_field": "queue"}, "--label-field"),
        ("text,label\nhello,a\nworld,a\n", {}, "single class"),
        ("text,label\n,a\n,b\n", {}, "no usable rows"),
        ("", {}, "empty"),
    ],
)
def test_clear_errors(tmp_path: Path, content, kwargs, message) -> None:
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_dataset(path, **kwargs)


def test_test_file_label_unknown_to_training_is_a_bad_row(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\na b,x\nc d,y\ne f,x\ng h,y\n", encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("text,label\na,x\nb,z\n", encoding="utf-8")
    data = load_dataset(train, test_data=test)
    assert data.test_texts == ["a"] and len(data.train_texts) == 4
    assert [r.reason.split(" (")[0] for r in data.bad_rows] == ["unknown label"]


def test_stratified_split_keeps_class_shares_and_is_a_partition() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 20, 3])
    kept, held = stratified_split(labels, 0.2, seed=1)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    assert Counter(labels[held].tolist()) == {0: 20, 1: 10, 2: 4, 3: 1}
    again, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(kept, again)


def test_stratified_folds_are_disjoint_and_fold_zero_is_the_plain_split() -> None:
    labels = np.repeat(np.arange(4), [40, 25, 10, 2])
    plain_kept, plain_held = stratified_split(labels, 0.2, seed=3)
    folds = [stratified_split(labels, 0.2, seed=3, fold=k) for k in range(4)]
    np.testing.assert_array_equal(folds[0][0], plain_kept)
    np.testing.assert_array_equal(folds[0][1], plain_held)
    held_sets = [set(held.tolist()) for _, held in folds]
    for a in range(4):
        kept, held = folds[a]
        assert sorted([*kept, *held]) == list(range(len(labels)))  # each fold partitions the data
        for b in range(a + 1, 4):
            assert not held_sets[a] & held_sets[b], f"folds {a} and {b} overlap"
        # class shares are kept; the 2-document class holds out one in fold 0 and then nothing more
        assert np.bincount(labels[held], minlength=4)[:3].tolist() == [8, 5, 2]
        assert (labels[kept] == 3).sum() >= 1
    assert [int((labels[held] == 3).sum()) for _, held in folds] == [1, 0, 0, 0]


def test_stratified_subsample_exact_size_and_proportions() -> None:
    labels = np.repeat(np.arange(3), [600, 300, 100])
    chosen = stratified_subsample(labels, 100, seed=0)
    assert len(chosen) == len(set(chosen.tolist())) == 100
    assert Counter(labels[chosen].tolist()) == {0: 60, 1: 30, 2: 10}


def test_max_train_samples_and_validation_split(synthetic_jsonl: Path) -> None:
    data = load_dataset(synthetic_jsonl, val_fraction=0.25, max_train_samples=120, seed=3)
    assert len(data.train_texts) + len(data.val_texts) == 120
    assert Counter(data.val_labels) == {0: 10, 1: 10, 2: 10}
    assert not set(data.val_texts) & set(data.test_texts)


def test_20_newsgroups_loads_its_bydate_splits(news_data: str) -> None:
    data = load_dataset(news_data)
    assert (len(data.train_texts), len(data.test_texts), len(data.label_names)) == (11314, 7532, 20)
    assert data.label_names[0] == "alt.atheism" and data.bad_rows == []
    texts, labels, _ = load_evaluation_rows(news_data, data.label_names)
    assert len(texts) == 7532 and labels == data.test_labels


def test_data_module_does_not_import_torch() -> None:
    code = "import sys, training.data, training.batching, training.embeddings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tsv_quote_characters_are_text_not_quoting(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\nhe said "hi\tham\nfree "prize\tspam\nok\tham\nwin\tspam\n', encoding="utf-8")
    data = load_dataset(path, test_fraction=0.5)
    assert sorted(data.train_texts + data.test_texts) == ['free "prize', 'he said "hi', "ok", "win"]
