"""The Kubernetes manifests, as `kubectl kustomize` renders them, meet the deployment bar.

Renders every kustomization under deploy/k8s with the kubectl of the deploy tools venv
(.venv-deploy, created by deploy/validate.sh) and asserts on the objects: hardened
containers, probes, limits, the drain budget, KEDA against the topic's partitions, the
GPU overlay, and worker settings that the real `lstm-worker run` options accept.
"""

from __future__ import annotations

import json
import os
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
}
WORKER_OVERLAYS = ["base", "overlays/cpu", "overlays/gpu", "overlays/dev"]
AUTOSCALED = ["base", "overlays/cpu", "overlays/gpu"]
KUSTOMIZATION_FILES = sorted(K8S.rglob("kustomization.yaml"))
# A kustomize Component renders nothing alone; the tests compose it onto an overlay instead.
COMPONENTS = [str(p.parent.relative_to(K8S)) for p in KUSTOMIZATION_FILES if "\nkind: Component" in p.read_text()]
ALL_KUSTOMIZATIONS = [str(p.parent.relative_to(K8S)) for p in KUSTOMIZATION_FILES
                      if str(p.parent.relative_to(K8S)) not in COMPONENTS]
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

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
    matches = [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"] == "lstm-worker"]
    assert len(matches) == 1, "exactly one Deployment named lstm-worker"
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
    assert worker_keys <= cli_envvars, f"not read by `lstm-worker run`: {worker_keys - cli_envvars}"
    assert set(settings) - worker_keys <= {"HOME", "TMPDIR"}, f"stray variables: {set(settings) - worker_keys}"
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
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
        assert 53 in egress_ports, "DNS"
        assert all(rule.get("ports") for rule in policy["spec"]["egress"]), "every egress rule names its ports"


def test_training_job_trains_then_exports_into_a_claim(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["training"]
    (job,) = of_kind(objs, "Job")
    spec = job["spec"]["template"]["spec"]
    steps = spec.get("initContainers", []) + spec["containers"]
    text = json.dumps([c.get("command", []) + c.get("args", []) for c in steps])
    assert text.index("lstm-train") < text.index("lstm-export"), "train, then export"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert claims and claims <= {c["metadata"]["name"] for c in of_kind(objs, "PersistentVolumeClaim")}


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
    if component.endswith("model-from-pvc"):
        # The trained bundle is served read-only from the training Job's claim.
        model = worker_settings(objs)["LSTM_WORKER_MODEL"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = next(m for path, m in mounts.items() if model.startswith(path.rstrip("/") + "/") or model == path)
        assert mount.get("readOnly") is True
        volumes = {v["name"]: v for v in worker_deployment(objs)["spec"]["template"]["spec"]["volumes"]}
        claim = volumes[mount["name"]]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        training_claims = {c["metadata"]["name"] for c in render("training") if c["kind"] == "PersistentVolumeClaim"}
        assert claim["claimName"] in training_claims
