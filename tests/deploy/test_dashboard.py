"""The Grafana dashboard deploy/grafana/lstm-worker.json imports as is and every panel query is PromQL.

That every queried metric is one a live worker exports, and that every query runs on a real Prometheus,
is checked in tests/integration/test_prometheus.py (it scrapes a live worker)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import dashboard

PROMTOOL = shutil.which("promtool")
# Issue 17: the panels the dashboard must have (a word of each title).
REQUIRED_PANELS = ["Throughput", "lag", "latency", "Dead letters", "Review rate", "Label mix", "confidence",
                   "Drift", "Model served", "Shadow agreement"]


def test_dashboard_is_importable_as_is() -> None:
    board = dashboard.load()
    assert board["uid"] == "lstm-worker" and isinstance(board["schemaVersion"], int) and board["title"]
    inputs = {i["name"]: i for i in board["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert "id" not in board or board["id"] is None, "an exported dashboard carries no instance id"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        for source in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"]), panel["title"]


def test_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(p["title"] for p in dashboard.load()["panels"]).lower()
    missing = [word for word in REQUIRED_PANELS if word.lower() not in titles]
    assert not missing, f"panels missing: {missing} in {titles}"


def test_dashboard_queries_worker_metrics_only_and_every_drift_gauge_that_alerts() -> None:
    names = dashboard.queried_metrics()
    assert names and all(n.startswith("lstm_worker_") for n in names)
    assert {"lstm_worker_drift_label_divergence", "lstm_worker_drift_low_confidence_share",
            "lstm_worker_drift_low_confidence_reference"} <= names


@pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (deploy/validate.sh installs it: Debian's prometheus)")
def test_promtool_parses_every_panel_query(tmp_path: Path) -> None:
    """Every panel query, written as a recording rule, passes `promtool check rules`."""
    rules = [{"record": f"dashboard:query_{index}", "expr": expr}
             for index, (_title, expr) in enumerate(dashboard.queries())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_a_broken_query_fails_promtool(tmp_path: Path) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool absent")
    path = tmp_path / "broken.yaml"
    path.write_text(json.dumps({"groups": [{"name": "d", "rules": [
        {"record": "x:y", "expr": "sum by (le (rate(lstm_worker_records_in_total[1m]))"}]}]}), encoding="utf-8")
    assert subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0
