"""Checks of the custom resources a render may hold: KEDA and Prometheus Operator kinds.

Each checker takes one object and the whole render, and checks the fields its operator requires and its
agreement with the objects it points at: ScaledObject (the Deployment, the worker's LSTM_WORKER_* settings,
the TriggerAuthentication), TriggerAuthentication, ServiceMonitor (the Service and its ports) and
PrometheusRule (the worker's required alerts and the selector label). ``CHECKERS`` maps (API group, kind)
to its checker; a custom resource without one is a kind nobody checked.
"""

from __future__ import annotations

import re

from .common import (
    FALLBACK_BEHAVIORS,
    KAFKA_TRIGGER_REQUIRED,
    KEDA_SASL_MODES,
    LAG_BASIS_ANNOTATION,
    PARTITIONS_ANNOTATION,
    REQUIRED_ALERTS,
    SELECTOR_LABEL,
    SEVERITIES,
    WORKER_NAME,
    Obj,
    find,
    key,
    worker_settings,
)
from .model_store import check_model_alerts


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


CHECKERS = {
    ("keda.sh", "ScaledObject"): check_scaled_object,
    ("keda.sh", "TriggerAuthentication"): check_trigger_authentication,
    ("monitoring.coreos.com", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com", "PrometheusRule"): check_prometheus_rule,
}
