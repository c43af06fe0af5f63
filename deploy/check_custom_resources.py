"""Check the custom resources in a rendered kustomization; split out the built-in kinds.

kubernetes-validate knows only built-in kinds, so this script:
- writes the built-in objects of the rendered YAML to ``--builtin-out`` for it,
- checks every custom resource it knows (``checks/resources.py``: KEDA ScaledObject / TriggerAuthentication,
  Prometheus Operator ServiceMonitor / PrometheusRule) for the fields its operator requires, and for
  agreement with the objects it points at (the Deployment, the worker's LSTM_WORKER_*
  settings, the Service, the Secret reference),
- rejects any other custom resource (an unknown kind is a kind nobody checked),
- checks the worker's operational policy on the built-in kinds (``check_worker_policy``, ``checks/policy.py``):
  the disruption budget lets NotReady pods be evicted, rolled pods wait minReadySeconds, the
  the assignor set explicitly (range), no Namespace next to the workload, metrics ingress restricted
  to named peers, one scrape path, the Kafka Secret required and mounted key by key where SASL
  or TLS is used, exactly-once only on a StatefulSet (Parallel, headless service), GPU pods
  Guaranteed with room for the CUDA kernel cache in /tmp,
- checks the model store (``check_model_store``, ``checks/model_store.py``): its claim ReadWriteMany, mounted
  read-only by the workers, who poll it and have memory for two models during a swap; Jobs that write it run
  ``lstm-worker promote`` only after ``lstm-export`` succeeded (an earlier init container), with an
  fsGroup; the worker's PrometheusRule alerts on version skew (with a ``for`` of at least two polls)
  and on refused reloads,
- requires every checkov suppression annotation to name one check and give its reason (``checks/skips.py``),
- with ``--to-json``, prints the rendered objects as a JSON list (for tests that have
  no YAML parser) and checks nothing.

The checks live in the ``checks`` package beside this script (shared constants and helpers in
``checks/common.py``); this file only loads the render, runs them and reports.
Runs in the deploy tools venv (PyYAML). Exit status 1 on any problem, one line each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from checks.common import BUILTIN_GROUPS, Obj, api_group, key
from checks.model_store import check_model_store
from checks.policy import check_worker_policy
from checks.resources import CHECKERS
from checks.skips import check_checkov_skips


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
