"""Check the custom resources in a rendered kustomization; split out the built-in kinds.

kubernetes-validate knows only built-in kinds, so this script:
- writes the built-in objects of the rendered YAML to ``--builtin-out`` for it,
- checks every custom resource it knows (KEDA ScaledObject / TriggerAuthentication,
  Prometheus Operator ServiceMonitor / PrometheusRule) for the fields its operator requires, and for
  agreement with the objects it points at (the Deployment, the worker's LSTM_WORKER_*
  settings, the Service, the Secret reference),
- rejects any other custom resource (an unknown kind is a kind nobody checked),
- checks the worker's operational policy on the built-in kinds (``check_worker_policy``): the
  disruption budget lets NotReady pods be evicted, rolled pods wait minReadySeconds, the
  the assignor set explicitly (range), no Namespace next to the workload, metrics ingress restricted
  to named peers, one scrape path, the Kafka Secret required and mounted key by key where SASL
  or TLS is used, exactly-once only on a StatefulSet (Parallel, headless service), GPU pods
  Guaranteed with room for the CUDA kernel cache in /tmp,
- checks the model store (``check_model_store``): its claim ReadWriteMany, mounted read-only by the
  workers, who poll it and have memory for two models during a swap; Jobs that write it run
  ``lstm-worker promote`` only after ``lstm-export`` succeeded (an earlier init container), with an
  fsGroup; the worker's PrometheusRule alerts on version skew (with a ``for`` of at least two polls)
  and on refused reloads,
- requires every checkov suppression annotation to name one check and give its reason,
- with ``--to-json``, prints the rendered objects as a JSON list (for tests that have
  no YAML parser) and checks nothing.

Runs in the deploy tools venv (PyYAML). Exit status 1 on any problem, one line each.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

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


def check_scaled_object(obj: Obj, objs: list[Obj]) -> list[str]:
    where = key(obj)
    spec = obj.get("spec") or {}
    meta = obj["metadata"]
    problems: list[str] = []
    target_name = (spec.get("scaleTargetRef") or {}).get("name")
    if not target_name:
        return [f"{where}: spec.scaleTargetRef.name is required"]
    target_kind = (spec.get("scaleTargetRef") or {}).get("kind", "Deployment")
    deployment = find(objs, target_kind, target_name, meta.get("namespace"))
    if deployment is None:
        problems.append(f"{where}: scaleTargetRef names {target_kind} {target_name!r}, which is not in the render")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount")
    if not isinstance(high, int) or not isinstance(low, int) or not 0 <= low <= high:
        problems.append(f"{where}: need integers 0 <= minReplicaCount ({low}) <= maxReplicaCount ({high})")
    partitions = (meta.get("annotations") or {}).get(PARTITIONS_ANNOTATION)
    if partitions is None or not str(partitions).isdigit():
        problems.append(f"{where}: annotation {PARTITIONS_ANNOTATION} (the topic's partition count) is required")
    elif isinstance(high, int) and high > int(partitions):
        problems.append(f"{where}: maxReplicaCount {high} exceeds the topic's {partitions} partitions")
    basis = str((meta.get("annotations") or {}).get(LAG_BASIS_ANNOTATION, ""))
    if not re.match(r"^(measured|estimate): .{20,}", basis):
        problems.append(f"{where}: annotation {LAG_BASIS_ANNOTATION} must say 'measured: ...' or 'estimate: ...' "
                        f"(where lagThreshold comes from), got {basis!r}")
    fallback = spec.get("fallback")
    if not fallback:
        problems.append(f"{where}: spec.fallback is required (replicas to run while the scaler cannot read the lag)")
    else:
        threshold, replicas = fallback.get("failureThreshold"), fallback.get("replicas")
        if not isinstance(threshold, int) or threshold < 1:
            problems.append(f"{where}: fallback.failureThreshold must be a positive integer, got {threshold!r}")
        bounds = isinstance(low, int) and isinstance(high, int)
        if not isinstance(replicas, int) or not (bounds and low <= replicas <= high):
            problems.append(f"{where}: fallback.replicas {replicas!r} must lie in [minReplicaCount, maxReplicaCount]")
        if fallback.get("behavior", "static") not in FALLBACK_BEHAVIORS:
            problems.append(f"{where}: fallback.behavior {fallback.get('behavior')!r} is not one of "
                            f"{sorted(FALLBACK_BEHAVIORS)}")
    triggers = spec.get("triggers") or []
    if not triggers:
        problems.append(f"{where}: spec.triggers is empty")
    settings = worker_settings(deployment, objs) if deployment else {}
    for index, trigger in enumerate(triggers):
        at = f"{where}: triggers[{index}]"
        if trigger.get("type") != "kafka":
            problems.append(f"{at}: type {trigger.get('type')!r} is not the kafka scaler")
            continue
        metadata = trigger.get("metadata") or {}
        missing = [field for field in KAFKA_TRIGGER_REQUIRED if not metadata.get(field)]
        problems += [f"{at}: metadata.{field} is required" for field in missing]
        for field in ("lagThreshold", "activationLagThreshold"):
            if field in metadata and not (isinstance(metadata[field], str) and metadata[field].isdigit()):
                problems.append(f"{at}: metadata.{field} must be a quoted whole number, got {metadata[field]!r}")
        if trigger.get("metricType", "AverageValue") != "AverageValue" and fallback:
            problems.append(f"{at}: KEDA's fallback works only for metricType AverageValue")
        if metadata.get("limitToPartitionsWithLag") != "true":
            problems.append(f"{at}: metadata.limitToPartitionsWithLag must be \"true\" (no replicas for partitions "
                            "without lag)")
        elif metadata.get("allowIdleConsumers") == "true" or not metadata.get("topic"):
            problems.append(f"{at}: limitToPartitionsWithLag needs a topic and allowIdleConsumers other than true")
        if "sasl" in metadata and metadata["sasl"] not in KEDA_SASL_MODES:
            problems.append(f"{at}: metadata.sasl {metadata['sasl']!r} is not one of {sorted(KEDA_SASL_MODES)}")
        # KEDA must watch the very group and topic the worker consumes, on the same cluster.
        for field, env in (
            ("bootstrapServers", "LSTM_WORKER_BOOTSTRAP_SERVERS"),
            ("consumerGroup", "LSTM_WORKER_GROUP_ID"),
            ("topic", "LSTM_WORKER_TOPIC"),
        ):
            if deployment is not None and metadata.get(field) != settings.get(env):
                problems.append(f"{at}: metadata.{field} {metadata.get(field)!r} != worker {env} {settings.get(env)!r}")
        auth = (trigger.get("authenticationRef") or {}).get("name")
        if auth and find(objs, "TriggerAuthentication", auth, meta.get("namespace")) is None:
            problems.append(f"{at}: authenticationRef {auth!r} is not in the render")
    return problems


def check_trigger_authentication(obj: Obj, objs: list[Obj]) -> list[str]:
    where = key(obj)
    refs = (obj.get("spec") or {}).get("secretTargetRef") or []
    if not refs:
        return [f"{where}: spec.secretTargetRef is empty"]
    problems = []
    for index, ref in enumerate(refs):
        missing = [field for field in ("parameter", "name", "key") if not ref.get(field)]
        if missing:
            problems.append(f"{where}: secretTargetRef[{index}] lacks {', '.join(missing)}")
    return problems


def check_service_monitor(obj: Obj, objs: list[Obj]) -> list[str]:
    where = key(obj)
    spec = obj.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    endpoints = spec.get("endpoints") or []
    problems = []
    if not selector:
        problems.append(f"{where}: spec.selector.matchLabels is required")
    if not endpoints:
        problems.append(f"{where}: spec.endpoints is empty")
    services = [
        o
        for o in objs
        if o.get("kind") == "Service"
        and o["metadata"].get("namespace") == obj["metadata"].get("namespace")
        and selector.items() <= (o["metadata"].get("labels") or {}).items()
    ]
    if selector and not services:
        problems.append(f"{where}: no Service in the render carries the labels {selector}")
    port_names = {port.get("name") for service in services for port in service["spec"].get("ports", [])}
    for index, endpoint in enumerate(endpoints):
        if endpoint.get("port") not in port_names:
            port = endpoint.get("port")
            problems.append(f"{where}: endpoints[{index}].port {port!r} is no port of the selected Service")
    if obj["metadata"].get("name") == WORKER_NAME:
        problems += check_selector_label(obj)
    return problems


def check_selector_label(obj: Obj) -> list[str]:
    """The worker's ServiceMonitor and PrometheusRule carry the label Prometheus Operator installs select on."""
    if str((obj["metadata"].get("labels") or {}).get(SELECTOR_LABEL, "")).strip():
        return []
    return [f"{key(obj)}: needs the label {SELECTOR_LABEL}: <Prometheus' Helm release> (kube-prometheus-stack "
            "selects ServiceMonitors and PrometheusRules on it; without it the object is silently ignored)"]


def check_prometheus_rule(obj: Obj, objs: list[Obj]) -> list[str]:
    where = key(obj)
    groups = (obj.get("spec") or {}).get("groups") or []
    if not groups:
        return [f"{where}: spec.groups is empty"]
    problems = []
    for g_index, group in enumerate(groups):
        at = f"{where}: groups[{g_index}]"
        if not group.get("name"):
            problems.append(f"{at}: name is required")
        rules = group.get("rules") or []
        if not rules:
            problems.append(f"{at}: rules is empty")
        for r_index, rule in enumerate(rules):
            if not str(rule.get("expr", "")).strip():
                problems.append(f"{at}.rules[{r_index}]: expr is required")
            if ("alert" in rule) == ("record" in rule):
                problems.append(f"{at}.rules[{r_index}]: needs exactly one of alert and record")
    if obj["metadata"].get("name") == WORKER_NAME:
        problems += check_model_alerts(obj, objs)
        problems += check_worker_alerts(obj)
        problems += check_selector_label(obj)
    return problems


def check_worker_alerts(obj: Obj) -> list[str]:
    """Every alert has a severity, a summary and a description; the alerts for a stuck worker exist, and
    send errors (one oversize record dead-lettered is one) never page."""
    where = key(obj)
    alerts = {rule.get("alert"): rule for group in (obj.get("spec") or {}).get("groups") or []
              for rule in group.get("rules") or [] if rule.get("alert")}
    problems = []
    for name, rule in alerts.items():
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{where}: alert {name} needs a severity label in {sorted(SEVERITIES)}, got {severity!r}")
        annotations = rule.get("annotations") or {}
        for field in ("summary", "description"):
            if not str(annotations.get(field, "")).strip():
                problems.append(f"{where}: alert {name} needs a {field} annotation (the description names the fix)")
    for name, metric in REQUIRED_ALERTS.items():
        if name not in alerts or metric not in str(alerts[name].get("expr", "")):
            problems.append(f"{where}: alert {name} on {metric} is required")
    for name, rule in alerts.items():
        if "lstm_worker_send_errors_total" in str(rule.get("expr", "")) and \
                (rule.get("labels") or {}).get("severity") == "critical":
            problems.append(f"{where}: alert {name} pages on send errors: one oversize record is dead-lettered as "
                            "designed and counts as one; page on lstm_worker_send_stalled instead")
    return problems


def check_model_alerts(obj: Obj, objs: list[Obj]) -> list[str]:
    """The worker's rules alert when pods serve different models, and when a pod refuses a promotion."""
    where = key(obj)
    alerts = {rule.get("alert"): rule for group in (obj.get("spec") or {}).get("groups") or []
              for rule in group.get("rules") or [] if rule.get("alert")}
    workload = worker_workload(objs)
    poll = MODEL_POLL_S_DEFAULT
    if workload is not None:
        poll = float(worker_settings(workload, objs).get("LSTM_WORKER_MODEL_POLL_S", poll))
    problems = []
    skew = alerts.get(SKEW_ALERT)
    if skew is None or MODEL_INFO not in str(skew.get("expr", "")):
        problems.append(f"{where}: alert {SKEW_ALERT} on {MODEL_INFO} is required (pods serving different "
                        "model versions after a promotion)")
    else:
        wait = duration_s(skew.get("for"))
        if wait is None or not 2 * poll <= wait <= 600:
            problems.append(f"{where}: alert {SKEW_ALERT} needs a `for` between two model polls ({2 * poll:g}s: a "
                            f"promotion in progress is skew too) and 10m, got {skew.get('for')!r}")
    reload = alerts.get(RELOAD_ALERT)
    if reload is None or RELOAD_FAILURES not in str(reload.get("expr", "")):
        problems.append(f"{where}: alert {RELOAD_ALERT} on {RELOAD_FAILURES} is required (a pod refused a "
                        "promoted version and serves the old one)")
    return problems


CHECKERS = {
    ("keda.sh", "ScaledObject"): check_scaled_object,
    ("keda.sh", "TriggerAuthentication"): check_trigger_authentication,
    ("monitoring.coreos.com", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com", "PrometheusRule"): check_prometheus_rule,
}


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and match.items() <= labels.items()


def check_worker_policy(objs: list[Obj]) -> list[str]:
    """Operational policy of the worker, on the built-in kinds of one render (issue 20's bar)."""
    workload = worker_workload(objs)
    namespaces = [o for o in objs if o.get("kind") == "Namespace"]
    problems = []
    if namespaces and len(namespaces) != len(objs):
        # `kubectl delete -k` on such a render deletes the namespace and everything in it.
        problems.append(f"{key(namespaces[0])}: a Namespace must be rendered alone (deploy/k8s/namespace), "
                        "never next to other objects")
    if workload is None:
        return problems
    where = key(workload)
    spec = workload["spec"]
    pod = spec["template"]
    pod_labels = (pod.get("metadata") or {}).get("labels") or {}
    pod_spec = pod["spec"]
    container = next((c for c in pod_spec["containers"] if c.get("name") == "worker"), pod_spec["containers"][0])
    settings = worker_settings(workload, objs)

    budgets = [o for o in objs
               if o.get("kind") == "PodDisruptionBudget" and selects(o["spec"].get("selector"), pod_labels)]
    if not budgets:
        problems.append(f"{where}: no PodDisruptionBudget selects the worker pods")
    for budget in budgets:
        if budget["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problems.append(f"{key(budget)}: unhealthyPodEvictionPolicy must be AlwaysAllow: when Kafka fails every "
                            "worker is NotReady and the default policy blocks node drains")

    if int(spec.get("minReadySeconds", 0)) < MIN_READY_SECONDS:
        problems.append(f"{where}: minReadySeconds {spec.get('minReadySeconds', 0)} < {MIN_READY_SECONDS}: rolled pods "
                        "would trigger rebalances back to back")
    session = settings.get("LSTM_WORKER_SESSION_TIMEOUT_MS", "10000")
    if not session.isdigit() or not SESSION_TIMEOUT_MS[0] <= int(session) <= SESSION_TIMEOUT_MS[1]:
        problems.append(f"{where}: LSTM_WORKER_SESSION_TIMEOUT_MS {session} outside {SESSION_TIMEOUT_MS}: the "
                        "heartbeat (a third of it) is how fast members notice a rebalance: each rolled pod's pause")
    strategy = settings.get("LSTM_WORKER_ASSIGNMENT_STRATEGY")
    if strategy != ASSIGNMENT_STRATEGY:
        problems.append(f"{where}: LSTM_WORKER_ASSIGNMENT_STRATEGY is {strategy!r}, want {ASSIGNMENT_STRATEGY!r} "
                        "(set explicitly; see docs/deploy.md, Rollouts)")

    ports = container.get("ports", [])
    metrics_ports = {p.get("name") for p in ports} | {p.get("containerPort") for p in ports}
    policies = [o for o in objs
                if o.get("kind") == "NetworkPolicy" and selects(o["spec"].get("podSelector"), pod_labels)]
    for policy in policies:
        for index, rule in enumerate(policy["spec"].get("ingress") or []):
            ports = {port.get("port") for port in rule.get("ports") or []}
            peers = rule.get("from") or []
            if not ports or not ports <= metrics_ports:
                problems.append(f"{key(policy)}: ingress[{index}] admits ports {sorted(map(str, ports)) or 'all'}, "
                                "only the metrics port is served")
            if not peers or any("ipBlock" in peer or not (peer.get("namespaceSelector") or peer.get("podSelector"))
                                for peer in peers):
                problems.append(f"{key(policy)}: ingress[{index}] to the metrics port must name its peers "
                                "(the monitoring namespace), not admit everyone")

    pod_annotations = (pod.get("metadata") or {}).get("annotations") or {}
    annotated = str(pod_annotations.get("prometheus.io/scrape", "")).lower() == "true"
    monitors = [o for o in objs if o.get("kind") == "ServiceMonitor"]
    if annotated and monitors:
        problems.append(f"{where}: scraped twice (prometheus.io/scrape pod annotation and ServiceMonitor "
                        f"{monitors[0]['metadata'].get('name')}): every sum() would double; keep one")
    if not annotated and not monitors and any(o.get("kind") == "ScaledObject" for o in objs):
        problems.append(f"{where}: production-shaped render without any scrape path (ServiceMonitor or annotations)")

    secure = settings.get("LSTM_WORKER_SECURITY_PROTOCOL", "PLAINTEXT").upper() != "PLAINTEXT"
    secret_volumes = [v for v in pod_spec.get("volumes") or [] if "secret" in v]
    secret_env = [e for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
    if secure:
        for volume in secret_volumes:
            if volume["secret"].get("optional"):
                problems.append(f"{where}: volume {volume['name']}: the Kafka Secret is optional, yet "
                                f"{settings.get('LSTM_WORKER_SECURITY_PROTOCOL')} needs it")
            if not volume["secret"].get("items"):
                problems.append(f"{where}: volume {volume['name']} mounts every key of the Secret; list the keys used")
        for var in secret_env:
            if var["valueFrom"]["secretKeyRef"].get("optional"):
                problems.append(f"{where}: env {var['name']} reads an optional Secret key, yet the protocol needs it")
        password_file = settings.get("LSTM_WORKER_SASL_PASSWORD_FILE")
        if password_file:
            mounted = [f"{m['mountPath'].rstrip('/')}/{item['path']}" for m in container.get("volumeMounts") or []
                       for v in secret_volumes if v["name"] == m["name"] for item in v["secret"].get("items") or []]
            if password_file not in mounted:
                problems.append(f"{where}: LSTM_WORKER_SASL_PASSWORD_FILE {password_file} is not a mounted Secret key")
    elif secret_volumes or secret_env:
        problems.append(f"{where}: PLAINTEXT, yet the pod still references a Secret (remove it: none is needed)")

    exactly_once = settings.get("LSTM_WORKER_EXACTLY_ONCE", "").lower() in TRUE
    if exactly_once and workload["kind"] != "StatefulSet":
        problems.append(f"{where}: exactly-once under a Deployment: each new pod gets a new transactional id and a "
                        "crashed pod's open transaction blocks read_committed readers until it times out")
    if workload["kind"] == "StatefulSet":
        if spec.get("podManagementPolicy") != "Parallel":
            problems.append(f"{where}: podManagementPolicy must be Parallel (scale-out must not wait pod by pod)")
        service = find(objs, "Service", spec.get("serviceName"), workload["metadata"].get("namespace"))
        if service is None or service["spec"].get("clusterIP") != "None":
            problems.append(f"{where}: serviceName {spec.get('serviceName')!r} must name a headless Service "
                            "in the render")

    image = str(container.get("image", ""))
    if "/" in image.split("@")[0]:  # a registry image (release overlays; base and dev use local names)
        tag = image.split("@")[0].rsplit(":", 1)[1] if ":" in image.split("@")[0].rsplit("/", 1)[-1] else ""
        if "@sha256:" not in image and not IMAGE_TAG.match(tag):
            problems.append(f"{where}: image tag {tag!r} does not name the model it carries "
                            "(<version>-<model name>-m<model version> or <version>-nomodel, deploy/image-tag.sh)")
        model = settings.get("LSTM_WORKER_MODEL", "/models/current")
        if tag.endswith("-nomodel") and model.startswith("/models/current"):
            problems.append(f"{where}: image {tag!r} carries no model, yet LSTM_WORKER_MODEL is the baked-in path")

    limits = (container.get("resources") or {}).get("limits") or {}
    requests = (container.get("resources") or {}).get("requests") or {}
    if "nvidia.com/gpu" in limits:
        for resource in ("cpu", "memory"):
            if resource not in limits or quantity(requests.get(resource, "0")) != quantity(limits[resource]):
                problems.append(f"{where}: GPU pod {resource} requests {requests.get(resource)} != limits "
                                f"{limits.get(resource)}: not Guaranteed QoS as documented")
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        cache = env.get("CUDA_CACHE_MAXSIZE")
        tmp = next((v.get("emptyDir") or {} for v in pod_spec.get("volumes") or [] if v.get("name") == "tmp"), {})
        if not cache or env.get("CUDA_CACHE_PATH", "/tmp/").split("/")[1] != "tmp":
            problems.append(f"{where}: GPU pod without a bounded CUDA kernel cache under /tmp "
                            "(CUDA_CACHE_PATH, CUDA_CACHE_MAXSIZE)")
        elif quantity(tmp.get("sizeLimit", "0")) < int(cache) + 64 * 2**20:
            problems.append(f"{where}: /tmp sizeLimit {tmp.get('sizeLimit')} leaves no 64Mi beside the "
                            f"{int(cache) >> 20} MiB CUDA cache")
        if tmp.get("medium") == "Memory" and "memory" in limits and \
                quantity(limits["memory"]) < quantity(tmp.get("sizeLimit", "0")) + 2 * 2**30:
            problems.append(f"{where}: memory limit {limits['memory']} must hold 2 GiB for the process plus the "
                            f"in-memory /tmp ({tmp.get('sizeLimit')})")
    return problems


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


def check_model_store(objs: list[Obj]) -> list[str]:
    """The model store: RWX claim, read-only in workers that poll it with room for two models, promote after export."""
    problems = []
    for claim in objs:
        if claim.get("kind") == "PersistentVolumeClaim" and claim["metadata"].get("name") == MODEL_STORE_CLAIM:
            modes = (claim.get("spec") or {}).get("accessModes") or []
            if "ReadWriteMany" not in modes:
                problems.append(f"{key(claim)}: the model store needs accessModes [ReadWriteMany] (workers on every "
                                f"node read it while a Job writes), got {modes}")

    workload = worker_workload(objs)
    if workload is not None:
        where = key(workload)
        pod_spec = workload["spec"]["template"]["spec"]
        container = next((c for c in pod_spec["containers"] if c.get("name") == "worker"), pod_spec["containers"][0])
        settings = worker_settings(workload, objs)
        model = settings.get("LSTM_WORKER_MODEL", "")
        for mount, volume in claim_mounts(container, pod_spec):
            if mount.get("readOnly") is not True or volume["persistentVolumeClaim"].get("readOnly") is not True:
                problems.append(f"{where}: claim {volume['persistentVolumeClaim'].get('claimName')} must be mounted "
                                f"read-only by the workers (volumeMount and persistentVolumeClaim readOnly: true): "
                                "only the promote Job writes the store")
            path = mount.get("mountPath", "").rstrip("/")
            if model == path or model.startswith(path + "/"):
                claim_name = volume["persistentVolumeClaim"].get("claimName")
                if settings.get("LSTM_WORKER_MODEL_POLL_S") is None:
                    problems.append(f"{where}: serves the model from claim {claim_name} without "
                                    "LSTM_WORKER_MODEL_POLL_S: set it explicitly (the skew alert's `for` "
                                    "is derived from it)")
                limits = (container.get("resources") or {}).get("limits") or {}
                requests = (container.get("resources") or {}).get("requests") or {}
                if "nvidia.com/gpu" in limits:
                    tmp = next((v.get("emptyDir") or {} for v in pod_spec.get("volumes") or []
                                if v.get("name") == "tmp"), {})
                    one_model = 2 * 2**30 + quantity(tmp.get("sizeLimit", "0"))
                else:
                    one_model = CPU_POD_MEMORY
                need = one_model + MODEL_SWAP_HEADROOM
                memory = limits.get("memory")
                if memory is None or quantity(memory) < need:
                    problems.append(f"{where}: memory limit {memory} leaves no room for two models during a swap: "
                                    f"need {int(need) >> 20}Mi ({int(one_model) >> 20}Mi for one + "
                                    f"{MODEL_SWAP_HEADROOM >> 20}Mi)")
                elif quantity(requests.get("memory", "0")) != quantity(memory):
                    problems.append(f"{where}: memory requests {requests.get('memory')} != limits {memory}: the "
                                    "swap headroom must be Guaranteed, not burstable")

    for job in objs:
        if job.get("kind") != "Job":
            continue
        pod_spec = job["spec"]["template"]["spec"]
        steps = pod_steps(pod_spec)
        writes = [c for _, c in steps for mount, _v in claim_mounts(c, pod_spec, MODEL_STORE_CLAIM)
                  if not mount.get("readOnly")]
        if writes and not (pod_spec.get("securityContext") or {}).get("fsGroup"):
            problems.append(f"{key(job)}: writes the model store without a pod fsGroup (the non-root user could "
                            "not write the claim, and the workers' group could not read it)")
        exports = [i for i, (_, c) in enumerate(steps) if "lstm-export" in command_line(c)]
        for index, (_, container) in enumerate(steps):
            line = command_line(container)
            if "promote" not in line or "lstm-worker" not in line or "--previous" in line or not exports:
                continue
            # Only init containers run strictly one after another, each after the previous succeeded.
            ordered = [i for i in exports if i < index and steps[i][0] == "initContainers"]
            if len(ordered) != len(exports):
                problems.append(f"{key(job)}: container {container.get('name')} promotes while lstm-export is not an "
                                "earlier init container: promote must run only after the export succeeded")
    return problems


SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d*$")
SKIP_VALUE = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=(?P<reason>.+)$")


def check_checkov_skips(obj: Obj) -> list[str]:
    """Every checkov suppression names one check and says why (at least a short sentence)."""
    problems = []
    for name, value in ((obj.get("metadata") or {}).get("annotations") or {}).items():
        if SKIP_ANNOTATION.match(name):
            match = SKIP_VALUE.match(str(value))
            if not match or len(match.group("reason").strip()) < 15:
                problems.append(f"{key(obj)}: annotation {name}={value!r} must be CHECK_ID=<reason of 15+ characters>")
    return problems


def load(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path, help="output of `kubectl kustomize DIR`")
    parser.add_argument("--builtin-out", type=Path, help="write the built-in kinds here (multi-document YAML)")
    parser.add_argument("--to-json", action="store_true", help="print all objects as a JSON list and exit")
    args = parser.parse_args(argv)
    objs = load(args.rendered)
    if args.to_json:
        json.dump(objs, sys.stdout)
        return 0
    builtin = [obj for obj in objs if api_group(obj) in BUILTIN_GROUPS]
    problems: list[str] = check_worker_policy(objs) + check_model_store(objs)
    for obj in objs:
        problems += check_checkov_skips(obj)
        if api_group(obj) in BUILTIN_GROUPS:
            continue
        checker = CHECKERS.get((api_group(obj), obj.get("kind")))
        if checker is None:
            kind = f"{obj.get('apiVersion')} {obj.get('kind')}"
            problems.append(f"{key(obj)}: custom resource {kind} has no checker in {Path(__file__).name}")
        else:
            problems += checker(obj, objs)
    if args.builtin_out:
        args.builtin_out.write_text(yaml.safe_dump_all(builtin, sort_keys=False), encoding="utf-8")
    for problem in problems:
        print(problem)
    custom = len(objs) - len(builtin)
    print(f"{args.rendered.name}: {len(builtin)} built-in, {custom} custom, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
