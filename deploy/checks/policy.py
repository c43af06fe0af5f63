"""The worker's operational policy, checked on the built-in kinds of one render.

``check_worker_policy``: the disruption budget lets NotReady pods be evicted, rolled pods wait
minReadySeconds, the session timeout and the assignor set explicitly, no Namespace next to the workload,
metrics ingress restricted to named peers, one scrape path, the Kafka Secret required and mounted key by key
where SASL or TLS is used, exactly-once only on a StatefulSet (Parallel, headless service), release images
tagged with the model they carry, GPU pods Guaranteed with room for the CUDA kernel cache in /tmp.
"""

from __future__ import annotations

from .common import (
    ASSIGNMENT_STRATEGY,
    IMAGE_TAG,
    MIN_READY_SECONDS,
    SESSION_TIMEOUT_MS,
    TRUE,
    Obj,
    find,
    key,
    quantity,
    selects,
    worker_settings,
    worker_workload,
)


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
