"""lstm-train warns (terminal and metrics.json) about data whose numbers would mislead; a bad CSV is one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.report import _baseline_verdict
from training.teacher import teacher_margins

QUICK = ["--members", "1", "--epochs", "1", "--max-len", "16", "--embed-dim", "8", "--hidden-size", "8",
         "--no-baseline", "--bow-weight", "0", "--distill-weight", "0"]


def write_csv(path: Path, rows: list[tuple[str, str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_rare_and_untested_classes_and_a_tiny_test_split_are_warned_about(lstm_train, tmp_path: Path) -> None:
    rows = [(f"free prize number {i} call now", "spam") for i in range(15)]
    rows += [(f"see you at lunch on day {i}", "ham") for i in range(15)]
    rows += [("one message of its own kind", "rare")]
    output = tmp_path / "run"
    result = lstm_train("--data", str(write_csv(tmp_path / "few.csv", rows)), "--output", str(output), *QUICK)
    assert result.returncode == 0, result.stderr
    expected = [
        "classes with fewer than 10 training examples: 'rare' (1); too few to learn or to measure: add examples, "
        "or merge or drop these classes",
        "classes with no document in the test split: 'rare'; the report says nothing about them: add examples, "
        "or give --test-data with them",
        "the test split has 6 documents: each one moves accuracy by 16.7 points, too few to compare models: add "
        "data, or give a larger --test-data",
    ]
    assert json.loads((output / "metrics.json").read_text())["data"]["warnings"] == expected
    printed = [line.removeprefix("warning: ") for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert printed == expected + expected  # at the start, and again in the report at the end


def test_enough_data_gives_no_warning(lstm_train, sms_data: str, tmp_path: Path) -> None:
    result = lstm_train("--data", sms_data, "--text-field", "2", "--label-field", "1", "--output",
                        str(tmp_path / "run"), *QUICK)
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout


def test_a_semicolon_separated_csv_is_one_line_naming_the_fix(lstm_train, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "semi.csv", [("hello there", "ham"), ("win cash", "spam")], delimiter=";")
    result = lstm_train("--data", str(data), "--output", str(tmp_path / "run"))
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines() == [
        f"Error: {data}: the header 'text;label' is one column that looks ';'-separated; save the file "
        "comma-separated as .csv or tab-separated as .tsv"]


def test_too_little_text_to_distill_from_says_what_to_do() -> None:
    texts = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]
    with pytest.raises(ValueError, match=r"^too little text to distill from .* --distill-weight 0$"):
        teacher_margins(texts, [0, 0, 1, 1], 2, seed=0)


@pytest.mark.parametrize(("ours", "advice"), [(0.80, True), (0.85, True), (0.90, False)])
def test_a_model_that_does_not_beat_the_baseline_is_told_what_to_try(ours: float, advice: bool) -> None:
    line = _baseline_verdict({"accuracy": ours, "baseline": {"accuracy": 0.85}})
    assert ("to try: more labelled examples; --time-budget 10m" in line) == advice
    assert line.startswith("the model " + {0.80: "does NOT beat", 0.85: "matches", 0.90: "beats"}[ours])
