"""The Grafana dashboard deploy/grafana/lstm-worker.json as the tests see it: its PromQL (Grafana's
variables replaced), the metric names it queries, and the names a worker's /metrics exports.

Shared by tests/deploy/test_dashboard.py (structure, promtool parses every query) and
tests/integration/test_prometheus.py (every queried name is exported by a live worker; every query runs
on a real Prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lstm-worker.json"
# Grafana's built-in interval variables, as a Prometheus rule or the query API accepts them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}
METRIC = re.compile(r"\blstm_worker_[a-z0-9_]+\b")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def queries(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) for every target of every panel."""
    dashboard = dashboard or load()
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            found.append((panel["title"], expr))
    return found


def queried_metrics(dashboard: dict[str, Any] | None = None) -> set[str]:
    return {name for _title, expr in queries(dashboard) for name in METRIC.findall(expr)}


def exported_metrics(exposition: str) -> set[str]:
    """Series names a /metrics page exports: every sample name, plus the names a metric family declared by
    `# TYPE` will have once it has a child (a labelled counter has no sample before its first label)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gauge": ("",),
                "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
