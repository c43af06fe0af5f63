"""Shared vocabulary of the deploy checks: the constants they enforce and the helpers that read a render.

Names, annotations, limits and alert lists the checks compare against, the object helpers (``api_group``,
``key``, ``find``), Kubernetes quantities and Prometheus durations, and the accessors for the worker's
workload, its LSTM_WORKER_* settings, label selectors, a pod's steps and its claim mounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Groups served by a stock API server; anything else is a custom resource.
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
}
PARTITIONS_ANNOTATION = "lstm-worker.io/topic-partitions"
LAG_BASIS_ANNOTATION = "lstm-worker.io/lag-threshold-basis"
FALLBACK_BEHAVIORS = {"static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"}
WORKER_NAME = "lstm-worker"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Seconds a rolled pod stays Ready before the next is touched (bench/rolling_restart.py measured 10).
MIN_READY_SECONDS = 10
ASSIGNMENT_STRATEGY = "range"
# 6 s: the lowest a stock broker accepts (group.min.session.timeout.ms); measured to halve the rollout pause.
SESSION_TIMEOUT_MS = (6000, 6000)
TRUE = {"1", "true", "yes", "on"}
IMAGE_TAG = re.compile(r"^\d+\.\d+\.\d+(-[\w.]+)?-([a-z0-9][\w.-]*-m[\w.]+|nomodel)$")
QUANTITY = re.compile(r"^(?P<number>[0-9.]+)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
UNITS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9,
         "T": 10**12, "m": 10**-3}
# The model store (components/model-store, deploy/k8s/model-store, docs/deploy.md "New models without a rollout").
MODEL_STORE_CLAIM = "lstm-worker-models"
MODEL_POLL_S_DEFAULT = 10.0  # the worker's --model-poll-s default
# A second model (loaded and self-tested beside the serving one) on top of a one-model pod's limit.
MODEL_SWAP_HEADROOM = 256 * 2**20
CPU_POD_MEMORY = 2**30  # the base's one-model limit (docs/deploy.md, "Sizing")
SKEW_ALERT, RELOAD_ALERT = "LstmWorkerModelVersionSkew", "LstmWorkerModelReloadFailed"
MODEL_INFO, RELOAD_FAILURES = "lstm_worker_model_info", "lstm_worker_model_reload_failures_total"
# The label a Prometheus Operator selects ServiceMonitors and PrometheusRules on: kube-prometheus-stack's
# default selectors are `release: <its Helm release name>` (docs/deploy.md#monitoring).
SELECTOR_LABEL = "release"
SEVERITIES = {"critical", "warning", "info"}
# Alerts the worker's rules must keep, and the metric each one watches (issue 17: lag, a stuck worker
# (the pause itself and the send stall), no output while input arrives, dead letters, review, drift, aborted
# transactions and commit failures, pods not ready; model reload failures are check_model_alerts').
REQUIRED_ALERTS = {
    "LstmWorkerLagGrowing": "lstm_worker_consumer_lag",
    "LstmWorkerLagNotConsumed": "lstm_worker_consumer_lag",
    "LstmWorkerFetchPaused": "lstm_worker_fetch_paused",
    "LstmWorkerSendStalled": "lstm_worker_send_stalled",
    "LstmWorkerNoOutput": "lstm_worker_records_out_total",
    "LstmWorkerNotReady": "lstm_worker_ready",
    "LstmWorkerDeadLetters": "lstm_worker_dead_letters_total",
    "LstmWorkerReviewRate": "lstm_worker_review_total",
    "LstmWorkerDriftLabelMix": "lstm_worker_drift_label_divergence",
    "LstmWorkerDriftLowConfidence": "lstm_worker_drift_low_confidence_share",
    "LstmWorkerCommitFailures": "lstm_worker_commits_total",
    "LstmWorkerTransactionsAborted": "lstm_worker_commits_total",
}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?$")
KAFKA_TRIGGER_REQUIRED = ("bootstrapServers", "consumerGroup", "topic", "lagThreshold")
KEDA_SASL_MODES = {"none", "plaintext", "scram_sha256", "scram_sha512", "gssapi", "oauthbearer"}

Obj = dict[str, Any]


def api_group(obj: Obj) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def find(objs: Iterable[Obj], kind: str, name: str, namespace: str | None) -> Obj | None:
    for obj in objs:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == kind and meta.get("name") == name and meta.get("namespace") == namespace:
            return obj
    return None


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``2560Mi``, ``2``, ``500m``) as a number of bytes or cores."""
    match = QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(match.group("number")) * UNITS[match.group("unit")]


def duration_s(value: Any) -> float | None:
    """A Prometheus duration (``1m``, ``90s``, ``1h30m``) in seconds; None if not one of these forms."""
    match = DURATION.match(str(value or ""))
    if not value or not match:
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


def worker_workload(objs: Iterable[Obj]) -> Obj | None:
    """The worker's Deployment or StatefulSet (named lstm-worker), if the render has one."""
    found = [o for o in objs
             if o.get("kind") in WORKLOAD_KINDS and (o.get("metadata") or {}).get("name") == WORKER_NAME]
    return found[0] if len(found) == 1 else None


def worker_settings(deployment: Obj, objs: list[Obj]) -> dict[str, str]:
    """The LSTM_WORKER_* values the first container gets from ConfigMaps and literal env."""
    namespace = deployment["metadata"].get("namespace")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            config_map = find(objs, "ConfigMap", ref["name"], namespace)
            if config_map:
                settings.update(config_map.get("data") or {})
    for var in container.get("env") or []:
        if "value" in var:
            settings[var["name"]] = str(var["value"])
    return settings


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and match.items() <= labels.items()


def pod_steps(pod_spec: Obj) -> list[tuple[str, Obj]]:
    """Containers in the order they run: init containers (each after the previous succeeded), then the rest."""
    return ([("initContainers", c) for c in pod_spec.get("initContainers") or []]
            + [("containers", c) for c in pod_spec.get("containers") or []])


def command_line(container: Obj) -> str:
    return " ".join(str(part) for part in (container.get("command") or []) + (container.get("args") or []))


def claim_mounts(container: Obj, pod_spec: Obj, claim: str | None = None) -> list[tuple[Obj, Obj]]:
    """(volumeMount, volume) pairs of the container that mount a PersistentVolumeClaim (``claim`` if given)."""
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    return [(mount, volumes[mount.get("name")]) for mount in container.get("volumeMounts") or []
            if mount.get("name") in volumes
            and claim in (None, volumes[mount["name"]]["persistentVolumeClaim"].get("claimName"))]
