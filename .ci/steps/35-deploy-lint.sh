#!/usr/bin/env bash
# Dockerfile and Kubernetes manifests: hadolint; every kustomization under
# deploy/kubernetes/ rendered with `kubectl kustomize` and validated with
# kubernetes-validate --strict against 1.29 (the oldest release with native
# sidecars on by default), 1.31 (the last one where a Service's named targetPort
# on a native sidecar does not resolve) and the newest schema it ships. Tools
# pinned in pyproject's `deploy` group; kubectl from scripts/apt.d/deploy.txt.
# The PodMonitor and PrometheusRule (CRDs, no schema here) are checked against
# the rendered pod by tests/test_container.py and tests/test_prometheus.py.
set -euo pipefail
make -s install
bash scripts/setup-system.sh
.venv/bin/hadolint Dockerfile
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl version --client
# Components and replacements with create: kustomize v5 (kubectl 1.27+).
kubectl version --client | grep -Eq '^Kustomize Version: v[5-9]' \
  || { echo "kubectl's kustomize is older than v5: see scripts/apt.d/deploy.txt" >&2; exit 1; }
for dir in example policy monitoring; do
  kubectl kustomize "deploy/kubernetes/$dir" >"$out/$dir.yaml"
done
newest=$(.venv/bin/python - <<'PY'
import pathlib, re, kubernetes_validate
root = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
versions = [d.name.split("-")[0].lstrip("v") for d in root.iterdir() if d.name.endswith("-local-strict")]
print(max(versions, key=lambda v: tuple(int(p) for p in re.findall(r"\d+", v))))
PY
)
manifests=("$out/example.yaml" "$out/policy.yaml" deploy/kubernetes/podman/*.yaml)
for k8s in 1.29.0 1.31.0 "$newest"; do
  .venv/bin/kubernetes-validate --strict --quiet -k "$k8s" "${manifests[@]}"
  echo "kubernetes-validate --strict $k8s: ${#manifests[@]} files OK"
done
.venv/bin/kubernetes-validate --quiet --no-warn "$out/monitoring.yaml"
echo "deploy lint: hadolint, kustomize builds and kubernetes-validate passed"
