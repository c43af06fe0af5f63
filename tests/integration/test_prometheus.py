"""The real Prometheus server scrapes a live worker on the real broker (issue 17).

A worker labels real documents; /usr/bin/prometheus (Debian's `prometheus`, installed by deploy/validate.sh,
which runs first in `make test`) scrapes its /metrics every second and also loads the shipped alert rules.
The test reads the worker's series back through Prometheus' HTTP query API, checks that every metric the
Grafana dashboard queries is one the live worker exports, that every panel query runs on Prometheus, that
the drift gauges and the broker-side lag read back as the worker exports them, and that every alert rule
evaluates without error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import dashboard
from tests.support.data import json_records
from tests.support.kafka import create_stream, produce, read_until
from tests.support.ports import free_port
from tests.support.workers import wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
TOOLS_PYTHON = Path(os.environ.get("DEPLOY_VENV", ROOT / ".venv-deploy")) / "bin" / "python"
CHECKER = ROOT / "deploy" / "check_custom_resources.py"
JOB = "lstm-worker-metrics"  # the ServiceMonitor's job (the Service name), as the alert rules expect


def prometheus_binary() -> str:
    """/usr/bin/prometheus, installed with apt-get as deploy/validate.sh does when missing and possible."""
    found = shutil.which("prometheus")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(install, env=env, capture_output=True, timeout=300)
        found = shutil.which("prometheus")
    if found is None:
        pytest.skip("the prometheus server binary is absent and apt-get cannot install it here (not root or no "
                    "apt-get): `apt-get install prometheus`, or run deploy/validate.sh as root first")
    return found


@contextmanager
def prometheus(binary: str, target: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping ``target`` every second with the shipped alert rules; yields its base URL."""
    # YAML to JSON through the deploy tools venv (the worker's venv has no PyYAML); Prometheus reads JSON.
    converted = subprocess.run([str(TOOLS_PYTHON), str(CHECKER), "--to-json", str(RULES)],
                               capture_output=True, text=True, timeout=60)
    assert converted.returncode == 0, converted.stderr
    spec = json.loads(converted.stdout)[0]["spec"]
    (tmp_path / "rules.yaml").write_text(json.dumps({"groups": spec["groups"]}), encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target], "labels": {"pod": "worker-0"}}]}],
    }), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, \
                "prometheus not ready in 30 s:\n" + (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    try:
        with urllib.request.urlopen(f"{url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    assert body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    data = api(url, "/api/v1/query", query=promql)
    assert data["resultType"] == "vector", data
    return data["result"]


def test_prometheus_scrapes_a_live_worker(broker, workers, news_docs, unique_name, tmp_path: Path) -> None:
    binary = prometheus_binary()
    if not TOOLS_PYTHON.exists():
        pytest.skip(f"deploy tools venv {TOOLS_PYTHON.parent.parent} is absent: run deploy/validate.sh once")
    bootstrap = broker.bootstrap_servers
    topic, labels, dlq = create_stream(bootstrap, unique_name, partitions=2)
    # A drift window the 121 records fill, so the drift gauges hold numbers, not NaN.
    worker = workers.start(bootstrap, topic, f"{unique_name}-g", "--drift-window", "50")
    worker.wait_ready()
    with prometheus(binary, f"127.0.0.1:{worker.metrics_port}", tmp_path) as url:
        # Two rounds: a counter's series appears with its first increment, and rate() counts only
        # increases between samples, so the second round is what the rate sees.
        first = json_records(news_docs[:60], prefix="first")
        produce(bootstrap, topic, first)
        assert len(read_until(bootstrap, [labels, dlq], len(first), timeout=60)) == len(first)
        wait_until(lambda: query(url, "lstm_worker_records_out_total"), 20, "Prometheus scraped the first round")
        records = first + json_records(news_docs[60:120], prefix="second") + [("bad", b"\xff not utf-8")]
        produce(bootstrap, topic, records[len(first):])
        answered = read_until(bootstrap, [labels, dlq], len(records), timeout=60)
        assert len(answered) == len(records)
        out = sum(1 for m in answered if m.topic == labels)

        # Every metric a dashboard panel queries is one the live worker exports.
        status, exposition = worker.get("/metrics")
        assert status == 200
        missing = dashboard.queried_metrics() - dashboard.exported_metrics(exposition)
        assert not missing, f"the dashboard queries metrics the worker does not export: {sorted(missing)}"

        # The worker's series, read back through Prometheus.
        def scraped_all() -> bool:
            got = query(url, f'lstm_worker_records_out_total{{job="{JOB}"}}')
            return bool(got) and float(got[0]["value"][1]) == out
        wait_until(scraped_all, 20, f"Prometheus sees lstm_worker_records_out_total = {out}")

        # A rate needs two samples in its window: the scrape after the count is one, the next (1 s) another.
        def rate_positive() -> bool:
            got = query(url, "sum(rate(lstm_worker_records_out_total[30s]))")
            return bool(got) and float(got[0]["value"][1]) > 0
        wait_until(rate_positive, 10, "rate(lstm_worker_records_out_total[30s]) > 0 in Prometheus")
        # The drift gauges of the served model and the broker-side lag, read back through Prometheus.
        own = {(f.name, s.labels.get("model")): s.value for f in text_string_to_metric_families(worker.get(
            "/metrics")[1]) for s in f.samples if f.name.startswith("lstm_worker_drift_")}  # every label counted
        wait_until(lambda: [float(r["value"][1]) for r in query(url, "lstm_worker_drift_window_records")] == [50.0],
                   20, "Prometheus sees a full drift window")
        for name in ("lstm_worker_drift_label_divergence", "lstm_worker_drift_low_confidence_share",
                     "lstm_worker_drift_confidence_shift", "lstm_worker_drift_low_confidence_reference"):
            [series] = query(url, name)
            assert float(series["value"][1]) == pytest.approx(own[(name, series["metric"]["model"])]), name
        [divergence] = query(url, "lstm_worker_drift_label_divergence")
        assert 0 <= float(divergence["value"][1]) <= 1
        wait_until(lambda: [float(r["value"][1]) for r in query(url, "sum(lstm_worker_consumer_lag)")] == [0.0], 20,
                   "the broker-side lag of the drained topic reads 0 in Prometheus")
        info = query(url, "lstm_worker_model_info")
        assert len(info) == 1 and info[0]["value"][1] == "1", info
        assert info[0]["metric"]["model"] and info[0]["metric"]["version"] and info[0]["metric"]["pod"] == "worker-0"
        assert info[0]["metric"]["job"] == JOB and divergence["metric"]["model"] == info[0]["metric"]["model"]
        dead = query(url, "sum by (reason) (lstm_worker_dead_letters_total)")
        assert [float(d["value"][1]) for d in dead] == [1.0], dead
        assert float(query(url, "lstm_worker_ready")[0]["value"][1]) == 1
        assert float(query(url, "up")[0]["value"][1]) == 1

        # Every panel query runs on the real engine.
        for _title, promql in dashboard.queries():
            api(url, "/api/v1/query", query=promql)  # asserts status success
        throughput = query(url, "sum(rate(lstm_worker_records_in_total[1m]))")
        assert throughput and float(throughput[0]["value"][1]) > 0

        # The shipped alert rules load and evaluate without error; nothing fires for a healthy worker.
        def evaluated() -> bool:
            groups = api(url, "/api/v1/rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return bool(rules) and all(r.get("lastEvaluation", "").startswith("20") and
                                       not r["lastEvaluation"].startswith("0001") for r in rules)
        wait_until(evaluated, 10, "every rule evaluated once")
        rules = [r for g in api(url, "/api/v1/rules")["groups"] for r in g["rules"]]
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        firing = [a for a in api(url, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]
        assert not firing, firing
    assert worker.terminate() == 0
