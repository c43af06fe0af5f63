"""Small synthetic labelled files for fast training-side tests (the real archive is in tests/conftest.py)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

TOPICS = {
    "space": "orbit rocket nasa launch shuttle moon planet satellite astronaut telescope".split(),
    "sport": "hockey team goal season player coach league score puck playoff".split(),
    "cars": "engine car wheel drive brake dealer ford tire mileage clutch".split(),
}
FILLER = "the a of and to in is it that for on with as was".split()


def synthetic_rows(n_per_class: int, seed: int = 0) -> list[dict]:
    """Documents whose topic words identify their label: a learnable task in seconds."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            tokens = [rng.choice(words if rng.random() < 0.5 else FILLER) for _ in range(rng.randint(5, 40))]
            rows.append({"text": " ".join(tokens), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sms_spam(sms_data: str) -> Path:
    """The real SMS spam collection (label<TAB>text, no header): short texts, two unbalanced classes."""
    return Path(sms_data)


@pytest.fixture(scope="session")
def synthetic_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("synthetic") / "topics.jsonl", synthetic_rows(80))


def _run_lstm_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``lstm-train`` console script (the one beside this interpreter)."""
    return subprocess.run([str(Path(sys.executable).parent / "lstm-train"), *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def lstm_train():
    return _run_lstm_train
