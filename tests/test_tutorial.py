"""docs/tutorial.md as a test: its ```bash blocks run in order, in one shell, in an empty folder.

Exactly the documented commands run; the test only chooses the broker's port (through the variables
the tutorial tells users to set when 9092 is taken) and the data (``SMS_DATA``, set to the file that
tests/support/datasets.py resolves). Then it checks what the tutorial promises: every streamed message
labelled once, the first half by version 1, the second by version 2 promoted while the worker ran, and
mostly right.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.model import BIN
from tests.support.ports import free_port

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)
SETTINGS_PREFIXES = ("LSTM_TRAIN_", "LSTM_EXPORT_", "LSTM_WORKER_")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tutorial_script() -> str:
    blocks = BASH_BLOCK.findall(TUTORIAL.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "the tutorial lost its shell blocks"
    # `set -e`: the first failing command stops the run; the echo says which block it was in.
    return "set -euo pipefail\n" + "".join(f"echo '### tutorial block {n}'\n{b}" for n, b in enumerate(blocks, 1))


def tutorial_env(sms_data: str) -> dict[str, str]:
    # The user's own settings must not change what the documented commands do.
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES) and k != "SMS_DATA"}
    port = free_port()
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", LSTM_WORKER_BROKER_PORT=str(port),
               LSTM_WORKER_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", SMS_DATA=sms_data)
    return env


def stop_process_group(shell: subprocess.Popen) -> None:
    """The broker and the worker the tutorial started in the background, if a step failed before stopping them.

    SIGTERM first: ``lstm-worker broker`` then stops its Tansu child, which runs in a session of its own
    and so outlives a SIGKILL sent to this group (a broker once outlived the whole CI run that way).
    """
    for stop, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(shell.pid, stop)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            shell.poll()  # reaps the shell once it has exited: a zombie would still count as the group's
            if not _group_alive(shell.pid):
                break
            time.sleep(0.2)
    shell.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_tutorial_runs_as_written(sms_data: str, tmp_path: Path) -> None:
    shell = subprocess.Popen(["bash", "-c", tutorial_script()], cwd=tmp_path, env=tutorial_env(sms_data),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = shell.communicate(timeout=480)
    finally:
        stop_process_group(shell)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert shell.returncode == 0, output[-8000:] + logs

    labels = {label["id"]: label for label in map(json.loads, (tmp_path / "labels.jsonl").read_text().splitlines())}
    truth = {m["id"]: m["label"] for m in map(json.loads, (tmp_path / "incoming.jsonl").read_text().splitlines())}
    assert sorted(labels) == sorted(truth)  # every message once
    first, second = list(truth)[:200], list(truth)[200:]
    assert {labels[i]["model"] for i in first} == {"spam@1"}, output[-3000:]
    assert {labels[i]["model"] for i in second} == {"spam@2"}, output[-3000:]
    assert (tmp_path / "models" / "CURRENT").read_text().strip() == "2"
    # The replays: all 400 messages once per version, each labelled by the version pinned, the live topic unchanged.
    for version in ("1", "2"):
        rows = [line.split("\t") for line in (tmp_path / f"history-v{version}.tsv").read_text().splitlines()]
        assert sorted(row[0] for row in rows) == sorted(truth), output[-3000:]
        assert {row[2] for row in rows} == {f"spam@{version}"}, output[-3000:]
        finished = [json.loads(line) for line in (tmp_path / f"replay-v{version}.log").read_text().splitlines()
                    if '"replay_finished"' in line]
        assert finished and finished[-1]["complete"] is True and finished[-1]["total"] == 400, output[-3000:]
    disagree = (tmp_path / "disagree.tsv").read_text().splitlines()
    assert all(row.split("\t")[1] != row.split("\t")[3] for row in disagree)
    # Spam is about one message in eight: answering "ham" to all would score 0.87.
    for half in (first, second):
        assert sum(labels[i]["label"] == truth[i] for i in half) / len(half) >= 0.93, output[-3000:]
