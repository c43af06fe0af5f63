"""Checks of the model store: the shared claim, the workers that read it, the Jobs that write it, its alerts.

``check_model_store``: the claim is ReadWriteMany and mounted read-only by the workers, who poll it and have
memory for two models during a swap; Jobs that write it have an fsGroup and run ``lstm-worker promote`` only
after ``lstm-export`` succeeded (an earlier init container). ``check_model_alerts`` (called on the worker's
PrometheusRule): alerts on version skew, with a ``for`` of at least two polls, and on refused reloads.
"""

from __future__ import annotations

from .common import (
    CPU_POD_MEMORY,
    MODEL_INFO,
    MODEL_POLL_S_DEFAULT,
    MODEL_STORE_CLAIM,
    MODEL_SWAP_HEADROOM,
    RELOAD_ALERT,
    RELOAD_FAILURES,
    SKEW_ALERT,
    Obj,
    claim_mounts,
    command_line,
    duration_s,
    key,
    pod_steps,
    quantity,
    worker_settings,
    worker_workload,
)


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
