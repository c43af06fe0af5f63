"""Result files say how to reproduce them on another machine: no absolute path of the machine that ran them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.provenance import ROOT, command_line, portable, portable_command

MACHINE_PATH = re.compile(r'"(/(?:work|tmp|root|home|var|opt|mnt)/[^"]*)"')


def test_a_path_becomes_the_variable_that_supplied_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_TRAIN_DATA", "/data/archives/20news-bydate.tar.gz")
    command = "python -m bench.explain --data /data/archives/20news-bydate.tar.gz --bundle /data/archives/b"
    assert portable_command(command) == "python -m bench.explain --data $LSTM_TRAIN_DATA --bundle /data/archives/b"


def test_paths_in_and_beside_the_repository_become_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LSTM_TRAIN_DATA", raising=False)
    result = {"bundle": str(ROOT / "artifacts/demo/bundle"), "rounds": 3,
              "runs": [{"data": str(ROOT.parent / "shared/data/sms-spam.tsv")}],
              "command": f"python -m bench.run --bundle {ROOT}/artifacts/demo/bundle"}
    assert portable(result) == {"bundle": "artifacts/demo/bundle", "rounds": 3,
                                "runs": [{"data": "../shared/data/sms-spam.tsv"}],
                                "command": "python -m bench.run --bundle artifacts/demo/bundle"}


def test_temporary_and_home_paths_name_their_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert portable(str(tmp_path / "run" / "bundle")) == "$TMPDIR/run/bundle"
    assert portable(str(Path.home() / "my runs" / "b")) == "~/my runs/b"
    assert command_line("bench.frontier", ["--bundle", str(Path.home() / "my runs" / "b")]) == \
        "python -m bench.frontier --bundle '~/my runs/b'"


def test_committed_result_files_hold_no_machine_paths() -> None:
    offending = {path.name: MACHINE_PATH.findall(path.read_text(encoding="utf-8"))[:2]
                 for path in sorted((ROOT / "bench" / "results").glob("*.json"))}
    assert {name: found for name, found in offending.items() if found} == {}
