"""Numbers the fault suite measures (duplicates under faults), kept for the README."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT = Path(os.environ.get("LSTM_FAULTS_REPORT", "artifacts/faults-report.json"))


def record_report(name: str, values: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = values
    REPORT.write_text(json.dumps(data, indent=2))
