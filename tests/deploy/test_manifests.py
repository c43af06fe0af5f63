"""The Kubernetes manifests, as `kubectl kustomize` renders them, meet the deployment bar.

Renders every kustomization under deploy/k8s with the kubectl of the deploy tools venv
(.venv-deploy, created by deploy/validate.sh) and asserts on the objects: hardened
containers, probes, limits, the drain budget, KEDA against the topic's partitions, the
GPU overlay, and worker settings that the real `lstm-worker run` options accept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TOOLS = Path(os.environ.get("DEPLOY_VENV", ROOT / ".venv-deploy"))
KUBECTL = TOOLS / "bin" / "kubectl"
TOOLS_PYTHON = TOOLS / "bin" / "python"
CHECKER = ROOT / "deploy" / "check_custom_resources.py"
PARTITIONS_ANNOTATION = "lstm-worker.io/topic-partitions"

# The worker's settings as the project defines them (the worker's interface contract).
WORKER_SETTINGS = {
    "LSTM_WORKER_TOPIC", "LSTM_WORKER_BOOTSTRAP_SERVERS", "LSTM_WORKER_GROUP_ID", "LSTM_WORKER_OUTPUT_TOPIC",
    "LSTM_WORKER_DLQ_TOPIC", "LSTM_WORKER_MODEL", "LSTM_WORKER_BATCH_SIZE", "LSTM_WORKER_MAX_WAIT_MS",
    "LSTM_WORKER_MAX_BATCH_TOKENS", "LSTM_WORKER_PROVIDER", "LSTM_WORKER_THREADS", "LSTM_WORKER_INPUT_FORMAT",
    "LSTM_WORKER_TEXT_FIELD", "LSTM_WORKER_TOP_K", "LSTM_WORKER_MAX_MESSAGE_BYTES", "LSTM_WORKER_METRICS_PORT",
    "LSTM_WORKER_SECURITY_PROTOCOL", "LSTM_WORKER_SASL_MECHANISM", "LSTM_WORKER_SASL_USERNAME",
    "LSTM_WORKER_SASL_PASSWORD", "LSTM_WORKER_SASL_PASSWORD_FILE", "LSTM_WORKER_SSL_CAFILE",
    "LSTM_WORKER_SSL_CERTFILE", "LSTM_WORKER_SSL_KEYFILE", "LSTM_WORKER_SESSION_TIMEOUT_MS",
    "LSTM_WORKER_SHUTDOWN_TIMEOUT_S", "LSTM_WORKER_LOG_FORMAT", "LSTM_WORKER_LOG_LEVEL",
    "LSTM_WORKER_EXACTLY_ONCE", "LSTM_WORKER_TRANSACTIONAL_ID", "LSTM_WORKER_ASSIGNMENT_STRATEGY",
    "LSTM_WORKER_MODEL_POLL_S",
}
# Options agreed with the worker and set by the manifests before every checkout's CLI has them:
# accepted here only while `lstm-worker run` lacks them (an older worker ignores the variable);
# once the CLI has the option, its own choices decide.
AGREED_OPTIONS = {"LSTM_WORKER_ASSIGNMENT_STRATEGY": {"range", "roundrobin", "cooperative-sticky"}}
# Options agreed with the worker for the model store, accepted before a checkout's `lstm-worker run` has them.
PENDING_WORKER_OPTIONS = {"LSTM_WORKER_MODEL_POLL_S"}
# Environment variables that are not worker settings but belong to the container.
CONTAINER_ENV = {"HOME", "TMPDIR", "CUDA_CACHE_PATH", "CUDA_CACHE_MAXSIZE"}
WORKER_OVERLAYS = ["base", "overlays/cpu", "overlays/gpu", "overlays/dev", "overlays/exactly-once"]
AUTOSCALED = ["base", "overlays/cpu", "overlays/gpu", "overlays/exactly-once"]
SECURED = AUTOSCALED  # SASL_SSL: the Kafka Secret is required there
KUSTOMIZATION_FILES = sorted(K8S.rglob("kustomization.yaml"))
# A kustomize Component renders nothing alone; the tests compose it onto an overlay instead.
COMPONENTS = [str(p.parent.relative_to(K8S)) for p in KUSTOMIZATION_FILES if "\nkind: Component" in p.read_text()]
ALL_KUSTOMIZATIONS = [str(p.parent.relative_to(K8S)) for p in KUSTOMIZATION_FILES
                      if str(p.parent.relative_to(K8S)) not in COMPONENTS]
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
WORKLOADS = {"Deployment", "StatefulSet"}

Obj = dict[str, Any]

pytestmark = pytest.mark.skipif(
    not (KUBECTL.exists() and TOOLS_PYTHON.exists()),
    reason=f"deploy tools venv {TOOLS} is absent: run deploy/validate.sh once to create it",
)


def render(kustomization: str | Path) -> list[Obj]:
    """`kubectl kustomize` the directory; YAML to JSON through the tools venv's PyYAML."""
    built = subprocess.run([str(KUBECTL), "kustomize", str(K8S / kustomization)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"kubectl kustomize {kustomization} failed: {built.stderr}"
    converted = subprocess.run([str(TOOLS_PYTHON), str(CHECKER), "--to-json", "/dev/stdin"],
                               input=built.stdout, capture_output=True, text=True, timeout=120)
    assert converted.returncode == 0, converted.stderr
    return json.loads(converted.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(name) for name in ALL_KUSTOMIZATIONS}


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def worker_deployment(objs: list[Obj]) -> Obj:
    """The worker's workload: the Deployment, or the StatefulSet of overlays/exactly-once."""
    matches = [d for d in objs if d["kind"] in WORKLOADS and d["metadata"]["name"] == "lstm-worker"]
    assert len(matches) == 1, "exactly one Deployment or StatefulSet named lstm-worker"
    return matches[0]


def worker_container(objs: list[Obj]) -> Obj:
    containers = worker_deployment(objs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def worker_settings(objs: list[Obj]) -> dict[str, str]:
    """What the worker container sees: its ConfigMaps (envFrom) plus literal env values."""
    container = worker_container(objs)
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objs, "ConfigMap")}
    settings: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name} that the render does not contain"
        settings.update(maps[name])
    settings.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return settings


def pod_specs(objs: list[Obj]) -> list[tuple[str, Obj]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for o in objs if o["kind"] in POD_OWNERS]


def test_every_kustomization_renders(rendered: dict[str, list[Obj]]) -> None:
    assert set(WORKER_OVERLAYS) <= set(rendered), f"missing kustomizations: {set(WORKER_OVERLAYS) - set(rendered)}"
    assert "training" in rendered, "the training Job has its own kustomization"
    for name in WORKER_OVERLAYS + ["training"]:
        assert pod_specs(rendered[name]), f"{name} renders no workload"
    for name, objs in rendered.items():
        assert objs, f"{name} renders nothing"


@pytest.mark.parametrize("kustomization", ALL_KUSTOMIZATIONS)
def test_every_container_is_non_root_read_only_and_bounded(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    for owner, spec in pod_specs(rendered[kustomization]):
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", owner
        assert spec.get("automountServiceAccountToken") is False, f"{owner} mounts an API token it never uses"
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{kustomization}: {owner} container {container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("runAsUser", pod_security.get("runAsUser", 0)) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("privileged", False), where
            limits = container.get("resources", {}).get("limits", {})
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= limits.keys(), f"{where}: limits {limits}"
            assert {"cpu", "memory"} <= requests.keys(), f"{where}: requests {requests}"
            # A read-only root needs somewhere to write: /tmp is an emptyDir.
            assert any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])), where


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_worker_probes_hit_the_metrics_port(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    container = worker_container(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics_port = int(worker_settings(objs)["LSTM_WORKER_METRICS_PORT"])
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path, f"{kustomization}: {probe} path"
        port = ports[http["port"]] if isinstance(http["port"], str) else http["port"]
        assert port == metrics_port, f"{kustomization}: {probe} probes {port}, the worker serves {metrics_port}"
    service_ports = [p for s in of_kind(objs, "Service") if s["metadata"]["name"] == "lstm-worker-metrics"
                     for p in s["spec"]["ports"]]
    assert service_ports and all(ports.get(p["targetPort"], p["targetPort"]) == metrics_port for p in service_ports)


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_grace_period_outlasts_the_drain(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    grace = worker_deployment(objs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(worker_settings(objs)["LSTM_WORKER_SHUTDOWN_TIMEOUT_S"])
    assert grace > drain, f"{kustomization}: SIGKILL after {grace}s would cut the {drain}s drain short"


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_config_keys_are_real_worker_settings(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    from worker.run_command import run

    cli_envvars = {p.envvar for p in run.params if isinstance(p, click.Option)}
    settings = worker_settings(rendered[kustomization])
    worker_keys = {k for k in settings if k.startswith("LSTM_WORKER_")}
    assert worker_keys, "the worker gets no LSTM_WORKER_* settings"
    assert worker_keys <= WORKER_SETTINGS, f"unknown settings: {worker_keys - WORKER_SETTINGS}"
    pending = set(AGREED_OPTIONS) - cli_envvars
    assert worker_keys <= cli_envvars | pending, f"not read by `lstm-worker run`: {worker_keys - cli_envvars}"
    assert set(settings) - worker_keys <= CONTAINER_ENV, f"stray variables: {set(settings) - worker_keys}"
    # No password in a ConfigMap, ever: it comes from the Secret (file or secretKeyRef).
    assert "LSTM_WORKER_SASL_PASSWORD" not in settings


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_config_values_are_accepted_by_the_real_cli(rendered: dict[str, list[Obj]], kustomization: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse the rendered settings with `lstm-worker run`'s own options and settings builder."""
    from worker.run_command import run
    from worker.settings import build_settings

    for name in list(os.environ):
        if name.startswith("LSTM_WORKER_"):
            monkeypatch.delenv(name)
    for name, value in worker_settings(rendered[kustomization]).items():
        monkeypatch.setenv(name, value)
    # With SASL, the Secret provides the user name at run time: a stand-in value here. (Without
    # SASL there is no Secret, and its optional reference leaves the variable unset.)
    sasl = os.environ.get("LSTM_WORKER_SECURITY_PROTOCOL", "").upper().startswith("SASL")
    for var in worker_container(rendered[kustomization]).get("env", []):
        if sasl and "secretKeyRef" in var.get("valueFrom", {}):
            monkeypatch.setenv(var["name"], "from-the-secret")
    context = run.make_context("run", [], resilient_parsing=False)
    params = dict(context.params)
    password_file = params.pop("sasl_password_file")
    params["log_level"] = params["log_level"].lower()
    settings = build_settings(sasl_password="from-the-secret" if password_file else None, **params)
    assert settings is not None


@pytest.mark.parametrize("kustomization", AUTOSCALED)
def test_keda_scales_on_lag_within_the_partition_count(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    scaled = of_kind(objs, "ScaledObject")
    assert len(scaled) == 1, f"{kustomization}: one KEDA ScaledObject"
    spec, meta = scaled[0]["spec"], scaled[0]["metadata"]
    assert spec["scaleTargetRef"]["name"] == worker_deployment(objs)["metadata"]["name"]
    partitions = int(meta["annotations"][PARTITIONS_ANNOTATION])
    assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    settings = worker_settings(objs)
    assert trigger["metadata"]["topic"] == settings["LSTM_WORKER_TOPIC"]
    assert trigger["metadata"]["consumerGroup"] == settings["LSTM_WORKER_GROUP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == settings["LSTM_WORKER_BOOTSTRAP_SERVERS"]
    # KEDA owns the replica count: a fixed one would be reset on every `kubectl apply`.
    assert "replicas" not in worker_deployment(objs)["spec"]


def test_documented_partition_count_matches_the_scaled_object(rendered: dict[str, list[Obj]]) -> None:
    partitions = of_kind(rendered["base"], "ScaledObject")[0]["metadata"]["annotations"][PARTITIONS_ANNOTATION]
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert f"{partitions} partitions" in docs, "docs/deploy.md states the topic's partition count KEDA is capped at"


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_provider(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["overlays/gpu"]
    container = worker_container(objs)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker_settings(objs)["LSTM_WORKER_PROVIDER"] == "cuda"
    assert "gpu" in container["image"].rsplit("/", 1)[-1], container["image"]
    pod = worker_deployment(objs)["spec"]["template"]["spec"]
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    assert pod.get("nodeSelector") or pod.get("affinity"), "GPU pods are steered to GPU nodes"


@pytest.mark.parametrize("kustomization", ["overlays/cpu", "overlays/dev"])
def test_cpu_overlays_ask_for_no_gpu(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    assert "nvidia.com/gpu" not in worker_container(objs)["resources"]["limits"]
    assert worker_settings(objs)["LSTM_WORKER_PROVIDER"] in {"cpu", "auto"}


def test_dev_overlay_is_one_worker_and_a_reachable_broker(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["overlays/dev"]
    assert worker_deployment(objs)["spec"]["replicas"] == 1
    assert not [o for o in objs if "." in o["apiVersion"].split("/")[0] and not o["apiVersion"].endswith("k8s.io/v1")
                and o["apiVersion"].split("/")[0] not in {"apps", "batch", "policy"}], \
        "the dev overlay needs no CRDs (KEDA, Prometheus Operator)"
    settings = worker_settings(objs)
    assert settings["LSTM_WORKER_SECURITY_PROTOCOL"].upper() == "PLAINTEXT"
    host, port = settings["LSTM_WORKER_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)
    namespace = worker_deployment(objs)["metadata"]["namespace"]
    service_name = host.split(".")[0]
    assert host in {service_name, f"{service_name}.{namespace}", f"{service_name}.{namespace}.svc",
                    f"{service_name}.{namespace}.svc.cluster.local"}, f"{host} is not a Service of {namespace}"
    services = [s for s in of_kind(objs, "Service") if s["metadata"]["name"] == service_name]
    assert services and any(p["port"] == int(port) for p in services[0]["spec"]["ports"])
    # The broker must advertise an address other pods can reach, in the rendered namespace.
    broker = next(d for d in of_kind(objs, "Deployment") if d["metadata"]["name"] != "lstm-worker")
    command = " ".join(broker["spec"]["template"]["spec"]["containers"][0].get("command", [])
                       + broker["spec"]["template"]["spec"]["containers"][0].get("args", []))
    advertised = [w for w in command.replace("=", " ").split() if w.startswith("tcp://")]
    assert any(a.startswith(f"tcp://{host}:") or a.startswith(f"tcp://{service_name}.{namespace}.")
               or a == f"tcp://{service_name}:{port}" for a in advertised), f"broker advertises {advertised}"


@pytest.mark.parametrize("kustomization", ALL_KUSTOMIZATIONS)
def test_no_secret_values_are_committed(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    assert not of_kind(rendered[kustomization], "Secret"), "Secrets are created out of band (docs/deploy.md)"


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_network_policy_admits_metrics_only_and_allows_dns(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    labels = worker_deployment(objs)["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in of_kind(objs, "NetworkPolicy")
                if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                and p["spec"]["podSelector"].get("matchLabels")]
    assert policies, f"{kustomization}: no NetworkPolicy selects the worker"
    metrics_ports = {"metrics", int(worker_settings(objs)["LSTM_WORKER_METRICS_PORT"])}
    for policy in policies:
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports") and all(p["port"] in metrics_ports for p in rule["ports"]), rule
            # Only Prometheus's namespace reaches the metrics port, not every pod of the cluster.
            assert rule.get("from") and all(peer.get("namespaceSelector", {}).get("matchLabels") == {
                "kubernetes.io/metadata.name": "monitoring"} for peer in rule["from"]), rule
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
        assert 53 in egress_ports, "DNS"
        assert all(rule.get("ports") for rule in policy["spec"]["egress"]), "every egress rule names its ports"


def step_lines(job: Obj) -> list[tuple[str, str]]:
    """(containers or initContainers, command line) of a Job's pod, in the order they run."""
    spec = job["spec"]["template"]["spec"]
    return [(field, " ".join(c.get("command", []) + c.get("args", [])))
            for field in ("initContainers", "containers") for c in spec.get(field, [])]


def test_training_job_trains_exports_into_the_store_then_promotes(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["training"]
    (job,) = of_kind(objs, "Job")
    spec = job["spec"]["template"]["spec"]
    steps = step_lines(job)
    train, export, promote = (next(i for i, (_, line) in enumerate(steps) if word in line)
                              for word in ("lstm-train", "lstm-export", "lstm-worker promote"))
    assert train < export < promote, "train, then export, then promote"
    # Init containers run one after another, each only after the previous one succeeded.
    assert steps[train][0] == steps[export][0] == "initContainers" and steps[promote][0] == "containers"
    assert "--store /models --version $(MODEL_VERSION)" in steps[export][1]
    assert steps[promote][1].startswith("lstm-worker promote --store /models $(MODEL_VERSION)")
    assert "--previous" not in steps[promote][1]
    (config,) = [c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("lstm-worker-train")]
    assert config["data"]["MODEL_VERSION"]
    promote_image = spec["containers"][0]["image"]
    assert promote_image.rsplit(":", 1)[0].endswith("/lstm-worker"), "promote runs in the worker image (no torch)"
    assert spec["securityContext"]["fsGroup"] == 10001, "the Job writes the store as the workers' group"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    store_claims = {c["metadata"]["name"] for c in of_kind(rendered["model-store"], "PersistentVolumeClaim")}
    assert claims and claims <= {c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")} | store_claims
    assert "lstm-worker-models" in claims


def test_model_store_claim_is_read_write_many_and_alone(rendered: dict[str, list[Obj]]) -> None:
    (claim,) = rendered["model-store"]
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["name"] == "lstm-worker-models"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"], "left to the platform (documented in pvc.yaml)"
    for name, objs in rendered.items():
        if name != "model-store":
            assert not [c for c in of_kind(objs, "PersistentVolumeClaim") if c["metadata"]["name"] ==
                        "lstm-worker-models"], f"{name}: `kubectl delete -k {name}` would delete every model"


@pytest.mark.parametrize("kustomization, version", [("jobs/rollback", "--previous"),
                                                    ("jobs/promote", "$(MODEL_VERSION)")])
def test_promote_and_rollback_jobs_run_the_worker_on_the_store(rendered: dict[str, list[Obj]], kustomization: str,
                                                               version: str) -> None:
    (job,) = of_kind(rendered[kustomization], "Job")
    ((field, line),) = step_lines(job)
    assert line == f"lstm-worker promote --store /models {version} --provider cpu"
    spec = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0, "a refusal is an answer, not a flake"
    assert spec["securityContext"]["fsGroup"] == 10001
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claim == "lstm-worker-models"
    (policy,) = of_kind(rendered[kustomization], "NetworkPolicy")
    assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == []


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_compose_onto_the_cpu_overlay(component: str, tmp_path: Path) -> None:
    """Each component still yields a hardened worker whose settings the CLI accepts."""
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/overlays/cpu\ncomponents:\n  - {relative}/{component}\n", encoding="utf-8")
    objs = render(tmp_path)
    plain = render("overlays/cpu")
    assert objs != plain, f"{component} changes nothing"
    container = worker_container(objs)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    if component.endswith("model-store"):
        # The store is served read-only from its RWX claim, polled, with room for a second model.
        from worker.run_command import run

        settings = worker_settings(objs)
        model = settings["LSTM_WORKER_MODEL"]
        assert model == "/models"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts[model]
        assert mount.get("readOnly") is True
        volumes = {v["name"]: v for v in worker_deployment(objs)["spec"]["template"]["spec"]["volumes"]}
        claim = volumes[mount["name"]]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        store_claims = {c["metadata"]["name"] for c in render("model-store") if c["kind"] == "PersistentVolumeClaim"}
        assert claim["claimName"] in store_claims
        assert float(settings["LSTM_WORKER_MODEL_POLL_S"]) == 10.0
        cli_envvars = {p.envvar for p in run.params if isinstance(p, click.Option)}
        # Agreed with the worker (`lstm-worker run --model-poll-s`); accepted here while a checkout's CLI lacks it.
        assert "LSTM_WORKER_MODEL_POLL_S" in cli_envvars | PENDING_WORKER_OPTIONS
        resources = container["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == "1280Mi", \
            "1 GiB for one model + 256 MiB for the second during a swap, Guaranteed"


# --- issue 20: drains, rollouts, exactly-once, KEDA, secrets, scraping, GPU ----------------------------------------

def worker_pod_labels(objs: list[Obj]) -> dict[str, str]:
    return worker_deployment(objs)["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_disruption_budget_lets_not_ready_workers_be_evicted(rendered: dict[str, list[Obj]],
                                                            kustomization: str) -> None:
    """A Kafka outage makes every worker NotReady; drains must still be able to evict them."""
    objs = rendered[kustomization]
    labels = worker_pod_labels(objs)
    budgets = [b for b in of_kind(objs, "PodDisruptionBudget")
               if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1
    assert budgets[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budgets[0]["spec"]["maxUnavailable"] == 1, "healthy workers still go one at a time"


@pytest.mark.parametrize("kustomization", WORKER_OVERLAYS)
def test_rollouts_wait_between_pods_and_rebalance_incrementally(rendered: dict[str, list[Obj]],
                                                                kustomization: str) -> None:
    from worker.run_command import run

    objs = rendered[kustomization]
    workload = worker_deployment(objs)
    assert workload["spec"]["minReadySeconds"] >= 10, "the group settles before the next pod is rolled"
    # Explicit in the pod's own env, next to the rollout settings (not left to the worker's default).
    env = {e["name"]: e.get("value") for e in worker_container(objs)["env"]}
    assert env["LSTM_WORKER_ASSIGNMENT_STRATEGY"] == "range"
    option = next((p for p in run.params if getattr(p, "envvar", None) == "LSTM_WORKER_ASSIGNMENT_STRATEGY"), None)
    choices = set(option.type.choices) if option is not None else AGREED_OPTIONS["LSTM_WORKER_ASSIGNMENT_STRATEGY"]
    assert env["LSTM_WORKER_ASSIGNMENT_STRATEGY"] in choices
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(worker_settings(objs)["LSTM_WORKER_SHUTDOWN_TIMEOUT_S"])
    # Members notice a rebalance at their next heartbeat (a third of the session timeout): 6 s, the
    # lowest a stock broker accepts, measured to cut the rollout pause (docs/deploy.md).
    assert worker_settings(objs)["LSTM_WORKER_SESSION_TIMEOUT_MS"] == "6000"


def test_namespace_is_its_own_kustomization(rendered: dict[str, list[Obj]]) -> None:
    """`kubectl delete -k` of an overlay must never delete the namespace (Secrets, the training claim)."""
    for name, objs in rendered.items():
        if name != "namespace":
            assert not of_kind(objs, "Namespace"), f"{name} renders a Namespace"
    (namespace,) = rendered["namespace"]
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == "lstm-worker"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = {worker_deployment(rendered[k])["metadata"]["namespace"] for k in WORKER_OVERLAYS}
    assert workloads == {"lstm-worker"}


def scrape_paths(objs: list[Obj]) -> list[str]:
    annotations = worker_deployment(objs)["spec"]["template"]["metadata"].get("annotations", {})
    paths = [f"ServiceMonitor/{m['metadata']['name']}" for m in of_kind(objs, "ServiceMonitor")]
    if annotations.get("prometheus.io/scrape") == "true":
        paths.append("prometheus.io annotations")
    return paths


@pytest.mark.parametrize("kustomization", AUTOSCALED)
def test_one_scrape_path_per_worker(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    assert scrape_paths(rendered[kustomization]) == ["ServiceMonitor/lstm-worker"]


def test_scrape_annotations_component_swaps_the_path(tmp_path: Path) -> None:
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/overlays/cpu\ncomponents:\n  - {relative}/components/scrape-annotations\n",
        encoding="utf-8")
    objs = render(tmp_path)
    assert scrape_paths(objs) == ["prometheus.io annotations"]
    annotations = worker_deployment(objs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == worker_settings(objs)["LSTM_WORKER_METRICS_PORT"]


@pytest.mark.parametrize("kustomization", SECURED)
def test_kafka_secret_is_required_and_mounted_key_by_key(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objs = rendered[kustomization]
    settings = worker_settings(objs)
    assert settings["LSTM_WORKER_SECURITY_PROTOCOL"] == "SASL_SSL"
    spec = worker_deployment(objs)["spec"]["template"]["spec"]
    container = worker_container(objs)
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "lstm-worker-kafka"
    assert not volume["secret"].get("optional", False), "a missing Secret stops the pod, never runs it unauthenticated"
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}], "only the key the worker reads"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/password" == settings["LSTM_WORKER_SASL_PASSWORD_FILE"]
    assert mount["readOnly"] is True
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and all(not r.get("optional", False) and r["name"] == "lstm-worker-kafka" for r in refs)


def test_dev_overlay_references_no_secret(rendered: dict[str, list[Obj]]) -> None:
    spec = worker_deployment(rendered["overlays/dev"])["spec"]["template"]["spec"]
    assert not [v for v in spec["volumes"] if "secret" in v]
    assert not [e for e in worker_container(rendered["overlays/dev"]).get("env", []) if "valueFrom" in e]


@pytest.mark.parametrize("kustomization", AUTOSCALED)
def test_keda_falls_back_and_wakes_on_any_lag(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    (scaled,) = of_kind(rendered[kustomization], "ScaledObject")
    spec, annotations = scaled["spec"], scaled["metadata"]["annotations"]
    partitions = int(annotations[PARTITIONS_ANNOTATION])
    fallback = spec["fallback"]
    assert fallback["failureThreshold"] >= 1
    assert spec["minReplicaCount"] <= fallback["replicas"] <= spec["maxReplicaCount"]
    assert fallback["behavior"] == "currentReplicasIfHigher", "never scale in while blind"
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert metadata["limitToPartitionsWithLag"] == "true" and metadata["allowIdleConsumers"] == "false"
    # The worker commits past transaction markers, so an idle group reads 0: one waiting record is work.
    assert metadata["activationLagThreshold"] == "0" and partitions >= spec["maxReplicaCount"]
    assert annotations["lstm-worker.io/lag-threshold-basis"].split(":")[0] in {"measured", "estimate"}
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == worker_deployment(rendered[kustomization])["kind"]


def test_gpu_lag_threshold_is_marked_as_an_estimate_in_manifest_and_docs(rendered: dict[str, list[Obj]]) -> None:
    (scaled,) = of_kind(rendered["overlays/gpu"], "ScaledObject")
    basis = scaled["metadata"]["annotations"]["lstm-worker.io/lag-threshold-basis"]
    threshold = scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"]
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    if basis.startswith("estimate"):
        assert f"`lagThreshold: \"{threshold}\"` is an estimate" in docs, "the docs say the GPU threshold is a guess"
    else:
        assert basis.startswith("measured: ") and len(basis) > 30


def test_gpu_pods_are_guaranteed_with_room_for_the_cuda_cache(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["overlays/gpu"]
    container = worker_container(objs)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests["cpu"] == limits["cpu"] and requests["memory"] == limits["memory"], "Guaranteed QoS"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CUDA_CACHE_PATH"].startswith("/tmp/")
    (tmp,) = [v for v in worker_deployment(objs)["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    mib = {"Mi": 1, "Gi": 1024}
    size_mib = int(tmp["emptyDir"]["sizeLimit"][:-2]) * mib[tmp["emptyDir"]["sizeLimit"][-2:]]
    cache_mib = int(env["CUDA_CACHE_MAXSIZE"]) // 2**20
    assert size_mib >= cache_mib + 64, "the kernel cache and the rest of /tmp both fit"
    memory_mib = int(limits["memory"][:-2]) * mib[limits["memory"][-2:]]
    assert tmp["emptyDir"]["medium"] == "Memory" and memory_mib >= 2048 + size_mib, "in-memory /tmp counts"


def test_exactly_once_overlay_is_a_statefulset_of_the_same_pods(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["overlays/exactly-once"]
    workload = worker_deployment(objs)
    assert workload["kind"] == "StatefulSet"
    spec = workload["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate" and "strategy" not in spec
    (headless,) = [s for s in of_kind(objs, "Service") if s["metadata"]["name"] == spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert worker_settings(objs)["LSTM_WORKER_EXACTLY_ONCE"] == "1"
    assert "LSTM_WORKER_TRANSACTIONAL_ID" not in worker_settings(objs), "the default id is the stable pod name"
    # The very pod template of the CPU Deployment (ConfigMap names differ only by their content hash).
    cpu = worker_deployment(rendered["overlays/cpu"])["spec"]["template"]

    def normalized(template: Obj) -> str:
        text = json.dumps(template, sort_keys=True)
        for cm in ("lstm-worker-config", "lstm-worker-kafka"):
            text = __import__("re").sub(rf'"{cm}-[a-z0-9]+"', f'"{cm}"', text)
        return text

    assert normalized(spec["template"]) == normalized(cpu)
    for name in ALL_KUSTOMIZATIONS:
        if name != "overlays/exactly-once" and any(o["kind"] in WORKLOADS and o["metadata"]["name"] == "lstm-worker"
                                                   for o in rendered[name]):
            assert worker_settings(rendered[name]).get("LSTM_WORKER_EXACTLY_ONCE", "") in {"", "0", "false"}, \
                f"{name}: exactly-once under a Deployment"


def test_release_images_name_their_model(rendered: dict[str, list[Obj]]) -> None:
    import re

    for name in ["overlays/cpu", "overlays/gpu", "overlays/exactly-once"]:
        image = worker_container(rendered[name])["image"]
        tag = image.rsplit(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+-[a-z0-9][\w.-]*-m[\w.]+", tag), f"{name}: {image}"
    tagger = subprocess.run([str(ROOT / "deploy" / "image-tag.sh")], capture_output=True, text=True, timeout=30)
    assert tagger.returncode == 0 and tagger.stdout.strip().endswith("-nomodel")


# --- the validators themselves refuse what they are there to refuse ------------------------------------------------

def check_objects(objs: list[Obj], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "render.yaml"
    path.write_text("\n---\n".join(json.dumps(o) for o in objs), encoding="utf-8")  # JSON documents are YAML
    return subprocess.run([str(TOOLS_PYTHON), str(CHECKER), str(path)], capture_output=True, text=True, timeout=60)


def _workload(objs: list[Obj]) -> Obj:
    return worker_deployment(objs)


def _env(objs: list[Obj]) -> list[Obj]:
    return worker_container(objs)["env"]


def _so(objs: list[Obj]) -> Obj:
    return of_kind(objs, "ScaledObject")[0]


MUTATIONS = {
    "pdb-default-policy": (lambda o: of_kind(o, "PodDisruptionBudget")[0]["spec"].pop("unhealthyPodEvictionPolicy"),
                           "unhealthyPodEvictionPolicy must be AlwaysAllow"),
    "no-min-ready": (lambda o: _workload(o)["spec"].pop("minReadySeconds"), "minReadySeconds 0"),
    "slow-heartbeat": (lambda o: _env(o).append({"name": "LSTM_WORKER_SESSION_TIMEOUT_MS", "value": "10000"}),
                       "LSTM_WORKER_SESSION_TIMEOUT_MS 10000 outside"),
    "other-assignor": (lambda o: next(e for e in _env(o) if e["name"] == "LSTM_WORKER_ASSIGNMENT_STRATEGY")
                       .update(value="cooperative-sticky"), "LSTM_WORKER_ASSIGNMENT_STRATEGY is 'cooperative-sticky'"),
    "namespace-in-render": (lambda o: o.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
                            "Namespace must be rendered alone"),
    "metrics-open": (lambda o: of_kind(o, "NetworkPolicy")[0]["spec"]["ingress"][0].pop("from"), "must name its peers"),
    "double-scrape": (lambda o: _workload(o)["spec"]["template"]["metadata"].setdefault("annotations", {})
                      .update({"prometheus.io/scrape": "true"}), "scraped twice"),
    "secret-optional": (lambda o: next(v for v in _workload(o)["spec"]["template"]["spec"]["volumes"] if "secret" in v)
                        ["secret"].update(optional=True), "the Kafka Secret is optional"),
    "secret-all-keys": (lambda o: next(v for v in _workload(o)["spec"]["template"]["spec"]["volumes"] if "secret" in v)
                        ["secret"].pop("items"), "mounts every key"),
    "exactly-once-deployment": (lambda o: _env(o).append({"name": "LSTM_WORKER_EXACTLY_ONCE", "value": "1"}),
                                "exactly-once under a Deployment"),
    "no-fallback": (lambda o: _so(o)["spec"].pop("fallback"), "spec.fallback is required"),
    "idle-partitions": (lambda o: _so(o)["spec"]["triggers"][0]["metadata"].pop("limitToPartitionsWithLag"),
                        "limitToPartitionsWithLag must be"),
    "unexplained-threshold": (lambda o: _so(o)["metadata"]["annotations"].pop("lstm-worker.io/lag-threshold-basis"),
                              "lag-threshold-basis must say"),
    "tag-without-model": (lambda o: worker_container(o).update(image="ghcr.io/lstm-worker/lstm-worker:0.1.0"),
                          "does not name the model"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_custom_resource_checker_refuses(rendered: dict[str, list[Obj]], mutation: str, tmp_path: Path) -> None:
    assert check_objects(rendered["overlays/cpu"], tmp_path).returncode == 0, "the shipped render passes"
    objs = json.loads(json.dumps(rendered["overlays/cpu"]))
    mutate, message = MUTATIONS[mutation]
    mutate(objs)
    result = check_objects(objs, tmp_path)
    assert result.returncode == 1 and message in result.stdout, result.stdout


@pytest.mark.parametrize("change, message", [
    ({"cpu": "1"}, "cpu requests 1 != limits 2"),
    ({"memory": "2Gi"}, "memory requests 2Gi != limits 2560Mi"),
])
def test_checker_refuses_a_burstable_gpu_pod(rendered: dict[str, list[Obj]], change: dict, message: str,
                                            tmp_path: Path) -> None:
    objs = json.loads(json.dumps(rendered["overlays/gpu"]))
    worker_container(objs)["resources"]["requests"].update(change)
    result = check_objects(objs, tmp_path)
    assert result.returncode == 1 and message in result.stdout, result.stdout


def test_checker_refuses_a_statefulset_without_parallel_pods(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    objs = json.loads(json.dumps(rendered["overlays/exactly-once"]))
    assert check_objects(objs, tmp_path).returncode == 0
    worker_deployment(objs)["spec"]["podManagementPolicy"] = "OrderedReady"
    result = check_objects(objs, tmp_path)
    assert result.returncode == 1 and "podManagementPolicy must be Parallel" in result.stdout, result.stdout


# --- issue 16: the model store, its Jobs and alerts: each check refuses what breaks it ------------------------------

def compose(component: str, overlay: str, tmp_path: Path) -> list[Obj]:
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/{overlay}\ncomponents:\n  - {relative}/{component}\n", encoding="utf-8")
    return render(tmp_path)


def _store_mount(objs: list[Obj]) -> Obj:
    return next(m for m in worker_container(objs)["volumeMounts"] if m["mountPath"] == "/models")


def _job_spec(objs: list[Obj]) -> Obj:
    return of_kind(objs, "Job")[0]["spec"]["template"]["spec"]


def _move_export_to_main(objs: list[Obj]) -> None:
    spec = _job_spec(objs)
    export = next(c for c in spec["initContainers"] if "lstm-export" in c["command"])
    spec["initContainers"].remove(export)
    spec["containers"].insert(0, export)  # runs beside promote, not before it


def _promote_before_export(objs: list[Obj]) -> None:
    spec = _job_spec(objs)
    export = next(c for c in spec["initContainers"] if "lstm-export" in c["command"])
    spec["initContainers"] = [c for c in spec["initContainers"] if c is not export] + spec["containers"]
    spec["containers"] = [export]  # promote now runs as an init container, export after it


def _rules(objs: list[Obj]) -> dict[str, Obj]:
    return {r["alert"]: r for g in of_kind(objs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]}


def _drop_alert(objs: list[Obj], name: str) -> None:
    for group in of_kind(objs, "PrometheusRule")[0]["spec"]["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != name]


STORE_MUTATIONS = {
    "store-rwo": ("model-store", lambda o: of_kind(o, "PersistentVolumeClaim")[0]["spec"].update(
        accessModes=["ReadWriteOnce"]), "the model store needs accessModes [ReadWriteMany]"),
    "store-writable-mount": ("component", lambda o: _store_mount(o).update(readOnly=False),
                             "must be mounted read-only by the workers"),
    "store-writable-claim": ("component", lambda o: next(
        v for v in _workload(o)["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
        ["persistentVolumeClaim"].pop("readOnly"), "must be mounted read-only by the workers"),
    "no-poll": ("component",
                lambda o: _env(o).remove(next(e for e in _env(o) if e["name"] == "LSTM_WORKER_MODEL_POLL_S")),
                "without LSTM_WORKER_MODEL_POLL_S"),
    "no-swap-headroom": ("component", lambda o: worker_container(o)["resources"].update(
        requests={"cpu": "2", "memory": "1Gi"}, limits={"cpu": "2", "memory": "1Gi"}),
        "leaves no room for two models during a swap: need 1280Mi"),
    "burstable-headroom": ("component", lambda o: worker_container(o)["resources"]["requests"].update(memory="1Gi"),
                           "memory requests 1Gi != limits 1280Mi"),
    "promote-beside-export": ("training", _move_export_to_main, "promote must run only after the export succeeded"),
    "promote-before-export": ("training", _promote_before_export, "promote must run only after the export succeeded"),
    "writer-without-fsgroup": ("training", lambda o: _job_spec(o)["securityContext"].pop("fsGroup"),
                               "writes the model store without a pod fsGroup"),
    "rollback-without-fsgroup": ("jobs/rollback", lambda o: _job_spec(o)["securityContext"].pop("fsGroup"),
                                 "writes the model store without a pod fsGroup"),
    "no-skew-alert": ("monitoring", lambda o: _drop_alert(o, "LstmWorkerModelVersionSkew"),
                      "alert LstmWorkerModelVersionSkew on lstm_worker_model_info is required"),
    "skew-alert-without-for": ("monitoring", lambda o: _rules(o)["LstmWorkerModelVersionSkew"].pop("for"),
                               "LstmWorkerModelVersionSkew needs a `for` between two model polls"),
    "skew-alert-within-a-poll": ("monitoring", lambda o: _rules(o)["LstmWorkerModelVersionSkew"].update({"for": "10s"}),
                                 "needs a `for` between two model polls (20s"),
    "no-reload-alert": ("monitoring", lambda o: _drop_alert(o, "LstmWorkerModelReloadFailed"),
                        "alert LstmWorkerModelReloadFailed on lstm_worker_model_reload_failures_total is required"),
}


@pytest.mark.parametrize("mutation", sorted(STORE_MUTATIONS))
def test_model_store_checks_refuse(rendered: dict[str, list[Obj]], mutation: str, tmp_path: Path) -> None:
    source, mutate, message = STORE_MUTATIONS[mutation]
    shipped = compose("components/model-store", "overlays/cpu", tmp_path) if source == "component" else rendered[source]
    assert check_objects(shipped, tmp_path).returncode == 0, "the shipped render passes"
    objs = json.loads(json.dumps(shipped))
    mutate(objs)
    result = check_objects(objs, tmp_path)
    assert result.returncode == 1 and message in result.stdout, result.stdout


def test_model_store_on_gpu_needs_its_own_headroom(tmp_path: Path) -> None:
    """The component's 1280Mi would lower the GPU pods' 2560Mi: the checker says what they need instead."""
    result = check_objects(compose("components/model-store", "overlays/gpu", tmp_path), tmp_path)
    assert result.returncode == 1 and "no room for two models during a swap: need 2624Mi" in result.stdout, \
        result.stdout


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (deploy/validate.sh installs it: Debian's prometheus)")
@pytest.mark.parametrize("change, fails", [(None, False), ({"for": "0s"}, True),
                                           ({"expr": "count(count by (model) (lstm_worker_model_info)) > 1"}, True)])
def test_model_alert_unit_tests(rendered: dict[str, list[Obj]], change: dict | None, fails: bool,
                                tmp_path: Path) -> None:
    """promtool runs the alert tests on the shipped rules, and they fail for an alert without a `for` or one
    that counts baked-image pods (a rolling update) as skew."""
    rule = json.loads(json.dumps(of_kind(rendered["monitoring"], "PrometheusRule")[0]))
    if change:
        rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
        next(r for r in rules if r.get("alert") == "LstmWorkerModelVersionSkew").update(change)
    (tmp_path / "model-rules.yaml").write_text(json.dumps({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    shutil.copy(K8S / "monitoring" / "model-alerts.test.yaml", tmp_path)
    result = subprocess.run([PROMTOOL, "test", "rules", "model-alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode != 0) == fails, result.stdout + result.stderr


# --- monitoring: selector label, alert contract, unit tests of every alert (issue 17) -------------------

SELECTOR_LABEL = "release"


def test_monitoring_objects_carry_the_operator_selector_label(rendered: dict[str, list[Obj]]) -> None:
    """kube-prometheus-stack selects ServiceMonitors and PrometheusRules on `release: <Helm release>`: both
    carry the label, with the same value (one Prometheus picks up both)."""
    rule = of_kind(rendered["monitoring"], "PrometheusRule")[0]
    value = rule["metadata"]["labels"].get(SELECTOR_LABEL)
    assert value, rule["metadata"]["labels"]
    for kustomization in ("base", "overlays/cpu", "overlays/gpu", "overlays/exactly-once"):
        monitors = of_kind(rendered[kustomization], "ServiceMonitor")
        assert monitors and all(m["metadata"]["labels"].get(SELECTOR_LABEL) == value for m in monitors), kustomization


def _alert(objs: list[Obj], name: str) -> Obj:
    return _rules(objs)[name]


MONITORING_MUTATIONS = {
    "rule-without-release": ("monitoring", lambda o: of_kind(o, "PrometheusRule")[0]["metadata"]["labels"].pop(
        SELECTOR_LABEL), "needs the label release"),
    "monitor-without-release": ("base", lambda o: of_kind(o, "ServiceMonitor")[0]["metadata"]["labels"].pop(
        SELECTOR_LABEL), "needs the label release"),
    "no-fetch-paused-alert": ("monitoring", lambda o: _drop_alert(o, "LstmWorkerFetchPaused"),
                              "alert LstmWorkerFetchPaused on lstm_worker_fetch_paused is required"),
    "no-send-stalled-alert": ("monitoring", lambda o: _drop_alert(o, "LstmWorkerSendStalled"),
                              "alert LstmWorkerSendStalled on lstm_worker_send_stalled is required"),
    "no-drift-alert": ("monitoring", lambda o: _drop_alert(o, "LstmWorkerDriftLabelMix"),
                       "alert LstmWorkerDriftLabelMix on lstm_worker_drift_label_divergence is required"),
    "lag-alert-without-lag": ("monitoring", lambda o: _alert(o, "LstmWorkerLagGrowing").update(
        expr="sum(lstm_worker_in_flight) > 5000"), "alert LstmWorkerLagGrowing on lstm_worker_consumer_lag"),
    "send-errors-page": ("monitoring",
                         lambda o: _alert(o, "LstmWorkerSendErrors")["labels"].update(severity="critical"),
                         "pages on send errors"),
    "alert-without-severity": ("monitoring", lambda o: _alert(o, "LstmWorkerSlow")["labels"].pop("severity"),
                               "alert LstmWorkerSlow needs a severity label"),
    "alert-without-description": ("monitoring", lambda o: _alert(o, "LstmWorkerNotReady")["annotations"].pop(
        "description"), "alert LstmWorkerNotReady needs a description annotation"),
}


@pytest.mark.parametrize("mutation", sorted(MONITORING_MUTATIONS))
def test_monitoring_checks_refuse(rendered: dict[str, list[Obj]], mutation: str, tmp_path: Path) -> None:
    source, mutate, message = MONITORING_MUTATIONS[mutation]
    assert check_objects(rendered[source], tmp_path).returncode == 0, "the shipped render passes"
    objs = json.loads(json.dumps(rendered[source]))
    mutate(objs)
    result = check_objects(objs, tmp_path)
    assert result.returncode == 1 and message in result.stdout, result.stdout


def test_every_alert_has_a_unit_test(rendered: dict[str, list[Obj]]) -> None:
    tested = "".join(p.read_text(encoding="utf-8") for p in (K8S / "monitoring").glob("*.test.yaml"))
    untested = [name for name in _rules(rendered["monitoring"]) if f"alertname: {name}\n" not in tested]
    assert not untested, f"alerts without a promtool unit test: {untested}"


WORKER_ALERT_CHANGES = {
    "shipped": (None, None, False),
    # The old allowance of one record per partition for transaction markers hides records that wait: the
    # worker commits past the markers now, so lag 1 is a record.
    "lag-with-marker-allowance": ("LstmWorkerLagNotConsumed", {"expr": (
        "sum by (topic) (max by (topic, partition) (lstm_worker_consumer_lag)) - count by (topic) (max by "
        "(topic, partition) (lstm_worker_consumer_lag)) > 0 and on () sum(rate(lstm_worker_records_in_total[10m])) "
        "== 0")}, True),
    # A drift threshold inside the normal range (20NG test windows reach 0.009) fires on a healthy stream.
    "drift-threshold-in-normal-range": ("LstmWorkerDriftLabelMix", {"expr": (
        "avg by (model) (lstm_worker_drift_label_divergence) > 0.005")}, True),
    # Comparing the low-confidence share with a fixed number instead of the reference's share.
    "low-confidence-without-reference": ("LstmWorkerDriftLowConfidence", {"expr": (
        "avg by (model) (lstm_worker_drift_low_confidence_share) > 0.2")}, True),
    # A drift alert without `for` fires on a short burst.
    "drift-without-for": ("LstmWorkerDriftLabelMix", {"for": "0s"}, True),
    # Paging on the first send error fires on one oversize record, dead-lettered as designed.
    "send-errors-without-for": ("LstmWorkerSendErrors", {"for": "0s"}, True),
    # Without `or vector(0)`, no dead-letter series (none yet) silences the no-output alert.
    "no-output-without-vector0": ("LstmWorkerNoOutput", {"expr": (
        "sum(rate(lstm_worker_records_in_total[5m])) > 0 and on () (sum(rate(lstm_worker_records_out_total[5m]))"
        " + sum(rate(lstm_worker_dead_letters_total[5m]))) == 0")}, True),
}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (deploy/validate.sh installs it: Debian's prometheus)")
@pytest.mark.parametrize("case", sorted(WORKER_ALERT_CHANGES))
def test_worker_alert_unit_tests(rendered: dict[str, list[Obj]], case: str, tmp_path: Path) -> None:
    """promtool runs worker-alerts.test.yaml on the shipped rules; the tests catch the mistakes issue 17 fixed."""
    alert, change, fails = WORKER_ALERT_CHANGES[case]
    rule = json.loads(json.dumps(of_kind(rendered["monitoring"], "PrometheusRule")[0]))
    if change:
        next(r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == alert).update(change)
    (tmp_path / "model-rules.yaml").write_text(json.dumps({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    shutil.copy(K8S / "monitoring" / "worker-alerts.test.yaml", tmp_path)
    result = subprocess.run([PROMTOOL, "test", "rules", "worker-alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode != 0) == fails, result.stdout + result.stderr


def test_the_replay_job_connects_as_the_workers_do() -> None:
    # kustomize loads no file from outside a kustomization's folder, so the Job keeps a copy of the
    # workers' Kafka settings; a change to one without the other would point the Job at another cluster.
    assert (K8S / "jobs" / "replay" / "kafka.env").read_text() == (K8S / "base" / "kafka.env").read_text()
