#!/usr/bin/env bash
# Validate everything under deploy/ without a cluster or a Docker engine:
#   1. render every kustomization (kubectl kustomize),
#   2. schema-check every built-in kind against a pinned Kubernetes version
#      (kubernetes-validate --strict),
#   3. check the custom resources (KEDA, Prometheus Operator) for their required fields
#      and for consistency with the worker settings (check_custom_resources.py),
#   4. lint the Dockerfiles (hadolint) and scan deploy/ with checkov (0 failed allowed),
#   5. check the images' lock files: hashed, compiled from the current pyproject.toml, and
#      installed with --require-hashes by every Dockerfile (lockfiles.py; offline),
#   6. check and unit-test the alert rules (promtool check rules / test rules, on the
#      PrometheusRule's spec and deploy/k8s/monitoring/*.test.yaml).
# Step 3 also enforces the worker's operational policy on each render (PDB eviction policy,
# minReadySeconds, the assignor set explicitly, no Namespace beside the workload, metrics
# ingress restricted, one scrape path, exactly-once only as a StatefulSet, the model store's
# RWX claim read-only in workers, promote only after export, the model alerts, ...).
# Tools live in their own venv (default .venv-deploy at the repo root), created and
# pinned by deploy/requirements-tools.txt; re-runs reuse it. promtool is not on PyPI: it comes
# from the Debian package `prometheus`, installed with apt-get when missing (root; ~10 s once).
# Exits non-zero on any failure.
#
#   deploy/validate.sh                  # everything
#   DEPLOY_VENV=/path deploy/validate.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="${DEPLOY_VENV:-$ROOT/.venv-deploy}"
REQS="deploy/requirements-tools.txt"
# The Kubernetes API version the built-in kinds must be valid for: the oldest minor a
# platform team is likely to run that still has every field these manifests use.
K8S_VERSION="${K8S_SCHEMA_VERSION:-1.33.0}"
# Rendered YAML and logs: a fresh directory per run (runs may overlap), removed at exit
# unless DEPLOY_RENDER_DIR names one to keep.
if [[ -n "${DEPLOY_RENDER_DIR:-}" ]]; then
    OUT="$DEPLOY_RENDER_DIR"
else
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/lstm-deploy-render.XXXXXX")"
    trap 'rm -rf "$OUT"' EXIT
fi

declare -a RESULTS=()
FAILED=0
record() { # name status
    RESULTS+=("$(printf '%-44s %s' "$1" "$2")")
    [[ "$2" == ok* ]] || FAILED=1
}

# --- 1. tools venv (idempotent: reinstalls only when the pins change) -------------------
t0=$SECONDS
stamp="$VENV/.deploy-tools.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found; set PYTHON=python3.x" >&2; exit 2; }
    echo "==> installing deploy tools into $VENV"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$stamp"
fi
echo "==> tools ready in $((SECONDS - t0)) s"
KUBECTL="$VENV/bin/kubectl"
export PATH="$VENV/bin:$PATH"

# --- 2. render every kustomization ---------------------------------------------------
t1=$SECONDS
rm -rf "$OUT" && mkdir -p "$OUT"
mapfile -t KUSTOMIZATIONS < <(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
# A kustomize Component renders nothing alone: check it composed onto the cpu overlay.
TARGETS=()
for dir in "${KUSTOMIZATIONS[@]}"; do
    if grep -q '^kind: Component' "$dir/kustomization.yaml"; then
        compose="$OUT/compose/${dir##*/}"; mkdir -p "$compose"
        rel="$(realpath --relative-to="$compose" "$ROOT")"
        printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n' \
            "$rel/deploy/k8s/overlays/cpu" "$rel/$dir" > "$compose/kustomization.yaml"
        TARGETS+=("$compose")
    else
        TARGETS+=("$dir")
    fi
done
for dir in "${TARGETS[@]}"; do
    name="${dir#deploy/k8s/}"; name="${name#"$OUT"/}"; file="$OUT/${name//\//_}.yaml"
    if "$KUBECTL" kustomize "$dir" > "$file" 2> "$file.err"; then
        record "render $name" "ok ($(grep -c '^kind:' "$file") objects)"
    else
        record "render $name" "FAILED: $(head -c 300 "$file.err")"; rm -f "$file"
    fi
done

# --- 3. schema validation of built-in kinds + custom resource checks --------------------
for file in "$OUT"/*.yaml; do
    name="$(basename "$file" .yaml)"
    if "$VENV/bin/python" deploy/check_custom_resources.py --builtin-out "$file.builtin" "$file" > "$file.crlog" 2>&1; then
        record "custom resources $name" "ok"
    else
        record "custom resources $name" "FAILED"; sed 's/^/    /' "$file.crlog"
    fi
    if "$VENV/bin/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict --quiet \
            "$file.builtin" > "$file.kvlog" 2>&1; then
        record "kubernetes-validate $K8S_VERSION $name" "ok"
    else
        record "kubernetes-validate $K8S_VERSION $name" "FAILED"; sed 's/^/    /' "$file.kvlog"
    fi
done

# --- 4. linters --------------------------------------------------------------------
if "$VENV/bin/hadolint" deploy/docker/*.Dockerfile > "$OUT/hadolint.log" 2>&1; then
    record "hadolint deploy/docker" "ok"
else
    record "hadolint deploy/docker" "FAILED"; sed 's/^/    /' "$OUT/hadolint.log"
fi
# --skip-download: no network calls (the machines here and CI may be offline).
if "$VENV/bin/checkov" --directory deploy --quiet --compact --skip-download \
        --framework dockerfile kubernetes kustomize > "$OUT/checkov.log" 2>&1; then
    passed="$(grep -ho 'Passed checks: [0-9]*' "$OUT/checkov.log" | awk '{s+=$3} END {print s+0}')"
    skipped="$(grep -ho 'Skipped checks: [0-9]*' "$OUT/checkov.log" | awk '{s+=$3} END {print s+0}')"
    scanned="$(grep -c 'scan results:' "$OUT/checkov.log" || true)"
    if (( passed > 0 && scanned == 3 )); then
        record "checkov deploy/" "ok ($passed passed, 0 failed, $skipped skipped with reasons)"
    else  # a scan that checked nothing proves nothing
        record "checkov deploy/" "FAILED: $scanned of 3 frameworks reported, $passed checks passed"
        sed 's/^/    /' "$OUT/checkov.log"
    fi
else
    record "checkov deploy/" "FAILED"; grep -E 'Check:|FAILED|File:|Error' "$OUT/checkov.log" | sed 's/^/    /' | head -60
fi

# --- 5. lock files (offline: no resolution, only consistency) ---------------------------
if "$VENV/bin/python" deploy/lockfiles.py check > "$OUT/locks.log" 2>&1; then
    record "lock files deploy/requirements" "ok ($(tail -1 "$OUT/locks.log" | cut -d: -f2- | sed 's/^ //'))"
else
    record "lock files deploy/requirements" "FAILED"; sed 's/^/    /' "$OUT/locks.log"
fi

# --- 6. alert rules: promtool check + unit tests -------------------------------------------
PROMTOOL="$(command -v promtool || true)"
if [[ -z "$PROMTOOL" ]] && command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "==> installing promtool (Debian package prometheus)"
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
    { apt_install || { apt-get update -qq && apt_install; }; } > "$OUT/apt-promtool.log" 2>&1 || true
    PROMTOOL="$(command -v promtool || true)"
fi
if [[ -z "$PROMTOOL" ]]; then
    record "promtool deploy/k8s/monitoring" "FAILED: promtool not found (apt-get install prometheus)"
elif [[ ! -f "$OUT/monitoring.yaml" ]]; then
    record "promtool deploy/k8s/monitoring" "FAILED: the monitoring kustomization did not render"
else
    rules="$OUT/promtool"; mkdir -p "$rules"
    # The PrometheusRule's spec is a Prometheus rule file; the tests name it model-rules.yaml.
    "$VENV/bin/python" - "$OUT/monitoring.yaml" "$rules/model-rules.yaml" <<'PYEOF'
import sys, yaml
groups = [g for doc in yaml.safe_load_all(open(sys.argv[1])) if doc and doc.get("kind") == "PrometheusRule"
          for g in doc["spec"]["groups"]]
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
    cp deploy/k8s/monitoring/*.test.yaml "$rules/"
    # Every alert must have at least one unit test (an `alertname:` in some *.test.yaml).
    untested="$(grep -ho '^ *- alert: *[A-Za-z0-9_]*' "$rules/model-rules.yaml" | sed 's/.*alert: *//' | sort -u \
        | while read -r alert; do grep -qE "alertname: *$alert\$" "$rules"/*.test.yaml || echo "$alert"; done)"
    if [[ -n "$untested" ]]; then
        record "promtool deploy/k8s/monitoring" "FAILED: alerts without a unit test: $(echo $untested)"
    elif (cd "$rules" && "$PROMTOOL" check rules model-rules.yaml && "$PROMTOOL" test rules ./*.test.yaml) \
            > "$OUT/promtool.log" 2>&1; then
        record "promtool deploy/k8s/monitoring" "ok ($(grep -o '[0-9]* rules found' "$OUT/promtool.log"), $(ls "$rules"/*.test.yaml | wc -l) test file(s))"
    else
        record "promtool deploy/k8s/monitoring" "FAILED"; sed 's/^/    /' "$OUT/promtool.log"
    fi
fi

echo
echo "deploy validation summary (checks took $((SECONDS - t1)) s)"
printf '  %s\n' "${RESULTS[@]}"
if (( FAILED )); then echo "deploy validation FAILED"; exit 1; fi
echo "deploy validation passed"
