"""Check the custom resources in a rendered kustomization; split out the built-in kinds.

kubernetes-validate knows only built-in kinds, so this script:
- writes the built-in objects of the rendered YAML to ``--builtin-out`` for it,
- checks every custom resource it knows (KEDA ScaledObject / TriggerAuthentication,
  Prometheus Operator ServiceMonitor / PrometheusRule) for the fields its operator requires, and for
  agreement with the objects it points at (the Deployment, the worker's LSTM_WORKER_*
  settings, the Service, the Secret reference),
- rejects any other custom resource (an unknown kind is a kind nobody checked),
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
    deployment = find(objs, "Deployment", target_name, meta.get("namespace"))
    if deployment is None:
        problems.append(f"{where}: scaleTargetRef names Deployment {target_name!r}, which is not in the render")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount")
    if not isinstance(high, int) or not isinstance(low, int) or not 0 <= low <= high:
        problems.append(f"{where}: need integers 0 <= minReplicaCount ({low}) <= maxReplicaCount ({high})")
    partitions = (meta.get("annotations") or {}).get(PARTITIONS_ANNOTATION)
    if partitions is None or not str(partitions).isdigit():
        problems.append(f"{where}: annotation {PARTITIONS_ANNOTATION} (the topic's partition count) is required")
    elif isinstance(high, int) and high > int(partitions):
        problems.append(f"{where}: maxReplicaCount {high} exceeds the topic's {partitions} partitions")
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
    return problems


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
    return problems


CHECKERS = {
    ("keda.sh", "ScaledObject"): check_scaled_object,
    ("keda.sh", "TriggerAuthentication"): check_trigger_authentication,
    ("monitoring.coreos.com", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com", "PrometheusRule"): check_prometheus_rule,
}


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
    problems: list[str] = []
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
