"""lstm-train's output folder and signals: refused before any work, stopped with every member, nothing left over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import read_only_folder

LSTM_TRAIN = str(Path(sys.executable).parent / "lstm-train")
# Small, but long enough (40 epochs) that a signal lands while three members train in their processes.
SLOW_THREE_MEMBERS = ["--text-field", "2", "--label-field", "1", "--members", "3", "--jobs", "3", "--epochs", "40",
                      "--max-len", "32", "--embed-dim", "16", "--hidden-size", "16", "--vocab-size", "2000",
                      "--no-baseline", "--bow-weight", "0", "--max-train-samples", "1500", "--patience", "40"]


def only_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def files_and_times(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


def running(pid: int) -> bool:
    """The process exists and is not a zombie (waiting for a parent that may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_an_unwritable_output_is_refused_before_any_work(lstm_train, synthetic_jsonl: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    read_only = read_only_folder(tmp_path)
    cases = {a_file / "run": f"{a_file} is a file, not a folder", a_file: f"{a_file} is a file, not a folder",
             read_only / "run": f"cannot write in {read_only} ("}
    for output, reason in cases.items():
        result = lstm_train("--data", str(synthetic_jsonl), "--output", str(output))
        assert result.returncode == 2 and result.stdout == ""  # not even the data was read
        assert only_error_line(result).startswith(f"Error: --output: {reason}")


def test_a_folder_holding_files_is_refused_unless_resume_or_overwrite(lstm_train, synthetic_jsonl: Path,
                                                                      tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "checkpoint.pt").write_bytes(b"a finished model")
    result = lstm_train("--data", str(synthetic_jsonl), "--output", str(earlier))
    assert result.returncode == 2 and result.stdout == ""
    assert only_error_line(result) == (
        f"Error: --output {earlier} already holds files (an earlier run?): continue that run with --resume, "
        "replace its files with --overwrite, or choose a new folder")
    assert (earlier / "checkpoint.pt").read_bytes() == b"a finished model"
    replaced = lstm_train("--data", str(synthetic_jsonl), "--output", str(earlier), "--overwrite", "--epochs", "1",
                          "--max-len", "40", "--embed-dim", "16", "--hidden-size", "16", "--vocab-size", "300")
    assert replaced.returncode == 0, replaced.stderr
    assert (earlier / "checkpoint.pt").read_bytes() != b"a finished model"


def test_a_failed_run_leaves_no_empty_folder(lstm_train, synthetic_jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "new" / "run"
    result = lstm_train("--data", str(synthetic_jsonl), "--output", str(output), "--text-field", "absent")
    assert result.returncode == 2 and "'absent'" in only_error_line(result)  # a data error: nothing was done
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("signum", "name", "code"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_a_signal_stops_every_member_and_says_how_to_resume(sms_data: str, tmp_path: Path, signum: int, name: str,
                                                            code: int) -> None:
    output = tmp_path / "run"
    process = subprocess.Popen([LSTM_TRAIN, "--data", sms_data, "--output", str(output), *SLOW_THREE_MEMBERS],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(output.glob("member-*/last.pt"))) < 3:  # every member has finished an epoch
            assert process.poll() is None and time.monotonic() < deadline, "lstm-train ended before the signal"
            time.sleep(0.2)
        children = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # Ctrl-C in a terminal reaches the whole group, members included
        else:
            process.send_signal(signum)  # `kill PID`: the parent only
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code
    assert "Traceback" not in stderr and "leaked" not in stderr and "SpawnPoolWorker" not in stderr
    assert stderr.strip().splitlines()[-1] == (f"lstm-train: stopped by {name}; every member process has ended; "
                                               "run the same command with --resume to continue")
    assert len(children) >= 4  # three members and multiprocessing's resource tracker
    deadline = time.monotonic() + 10  # the tracker ends once the last process that held its pipe has gone
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in children)
    before = files_and_times(output)
    time.sleep(3)  # a member still training would write its last.pt again within an epoch (about a second)
    assert files_and_times(output) == before
