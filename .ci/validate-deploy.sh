#!/usr/bin/env bash
# Validates everything under deploy/ offline: Kubernetes manifests in strict mode against the
# Kubernetes 1.33 schemas, the rendered kustomize base, the KEDA overlay (its ScaledObject with
# check_scaledobject.py, because kubernetes-validate has no schemas for KEDA's CRDs), the
# Prometheus alert rules and their unit tests, the Grafana dashboard JSON, and the
# Dockerfile's required lines.
# Installs kubernetes-validate (pip) and promtool (apt package "prometheus") when missing.
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."
readonly KUBERNETES_VERSION=1.33
readonly DEPLOY=deploy

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'validate-deploy: %s\n' "$*" >&2; exit 1; }

step "tools"
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet kubernetes-validate \
    || fail "failed to install kubernetes-validate with pip"
  hash -r
fi
if ! command -v promtool >/dev/null; then
  apt-get update -qq && apt-get install -y -qq prometheus >/dev/null \
    || fail "failed to install promtool (apt package prometheus)"
fi
kubernetes-validate --version
promtool --version 2>&1 | head -n 1

step "manifests (kubernetes-validate -k $KUBERNETES_VERSION --strict)"
# kustomization.yaml is kustomize's own format, not a Kubernetes object, so it is skipped.
mapfile -t manifests < <(find "$DEPLOY/base" -name '*.yaml' ! -name kustomization.yaml | sort)
[[ ${#manifests[@]} -gt 0 ]] || fail "no manifests found under $DEPLOY/base"
kubernetes-validate -k "$KUBERNETES_VERSION" --strict "${manifests[@]}"

step "kustomize base"
# Every manifest must be listed in the kustomization, or `kubectl apply -k` misses it.
for manifest in "${manifests[@]}"; do
  grep -qx "  - $(basename "$manifest")" "$DEPLOY/base/kustomization.yaml" \
    || fail "$manifest is not listed under resources in $DEPLOY/base/kustomization.yaml"
done
if kubectl kustomize --help >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize "$DEPLOY/base" >"$rendered"
  kubernetes-validate -k "$KUBERNETES_VERSION" --strict "$rendered"
else
  echo "kubectl kustomize is unavailable; the manifests above were validated directly"
fi

step "keda overlay"
# kubernetes-validate has no schema for any CRD, so the ScaledObject gets its own check; the rest of the
# rendered overlay is validated like the base.
python3 .ci/check_scaledobject.py "$DEPLOY/keda/scaledobject.yaml" "$DEPLOY/base"
if kubectl kustomize --help >/dev/null 2>&1; then
  overlay_dir=$(mktemp -d)
  trap 'rm -f "${rendered:-}"; rm -rf "$overlay_dir"' EXIT
  kubectl kustomize "$DEPLOY/keda" >"$overlay_dir/all.yaml"
  python3 - "$overlay_dir" <<'PY'
import sys, yaml
directory = sys.argv[1]
documents = [d for d in yaml.safe_load_all(open(f"{directory}/all.yaml")) if d]
scaled = [d for d in documents if d["kind"] == "ScaledObject"]
builtin = [d for d in documents if d["kind"] != "ScaledObject"]
if len(scaled) != 1:
    sys.exit(f"deploy/keda renders {len(scaled)} ScaledObjects; expected 1")
statefulset = next(d for d in builtin if d["kind"] == "StatefulSet")
container = statefulset["spec"]["template"]["spec"]["containers"][0]
orchestrator = {e["name"]: e.get("value") for e in container["env"]}.get("GRISTMILL_ORCHESTRATOR")
if orchestrator != "none":
    sys.exit(f"deploy/keda sets GRISTMILL_ORCHESTRATOR={orchestrator!r}; KEDA needs none")
yaml.safe_dump_all(builtin, open(f"{directory}/builtin.yaml", "w"))
yaml.safe_dump_all(scaled, open(f"{directory}/scaledobject.yaml", "w"))
print(f"deploy/keda: {len(builtin)} built-in objects and 1 ScaledObject, orchestrator none")
PY
  kubernetes-validate -k "$KUBERNETES_VERSION" --strict "$overlay_dir/builtin.yaml"
  python3 .ci/check_scaledobject.py "$overlay_dir/scaledobject.yaml" "$DEPLOY/base"
else
  echo "kubectl kustomize is unavailable; only $DEPLOY/keda/scaledobject.yaml was checked"
fi

step "prometheus rules"
promtool check rules "$DEPLOY/prometheus/alerts.yaml"
promtool test rules "$DEPLOY/prometheus/alerts_test.yaml"
# NOTE: promtool check config is not run because Debian's promtool is built without
# kubernetes_sd_configs and rejects the scrape config; it is parsed as YAML instead.
python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' \
  "$DEPLOY/prometheus/scrape-config.yaml"

step "grafana dashboard"
python3 - "$DEPLOY/grafana/gristmill-dashboard.json" <<'PY'
import json, sys
path = sys.argv[1]
dashboard = json.load(open(path))
panels = dashboard.get("panels") or sys.exit(f"{path}: no panels")
for panel in panels:
    targets = panel.get("targets") or sys.exit(f"{path}: panel {panel.get('title')!r} has no queries")
    for target in targets:
        if "gristmill_" not in target.get("expr", ""):
            sys.exit(f"{path}: panel {panel['title']!r} queries no gristmill metric")
print(f"{path}: {len(panels)} panels")
PY

step "dockerfile"
# No container engine runs here, so the image is not built; check the lines that matter.
for pattern in '^FROM rust:.* AS builder$' '^USER [0-9]+' '^ENTRYPOINT \["/usr/local/bin/gristmill"\]$'; do
  grep -Eq "$pattern" "$DEPLOY/Dockerfile" || fail "$DEPLOY/Dockerfile has no line matching $pattern"
done
echo "$DEPLOY/Dockerfile: ok"

printf '\nvalidate-deploy: all checks passed\n'
