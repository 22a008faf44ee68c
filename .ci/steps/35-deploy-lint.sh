#!/usr/bin/env bash
# Dockerfile and Kubernetes manifests: hadolint, and kubernetes-validate --strict
# against the newest schemas and the oldest release with native sidecars on by
# default (1.29). Tools pinned in pyproject's `deploy` group. The ServiceMonitor
# (a CRD, no schema here) is checked against the Service and Deployment by
# tests/test_container.py.
set -euo pipefail
make -s install
.venv/bin/hadolint Dockerfile
manifests=(deploy/kubernetes/*.yaml deploy/kubernetes/podman/*.yaml)
for k8s in 1.37.0 1.29.0; do
  .venv/bin/kubernetes-validate --strict --quiet -k "$k8s" "${manifests[@]}"
done
.venv/bin/kubernetes-validate --quiet --no-warn deploy/kubernetes/monitoring/*.yaml
echo "deploy lint: hadolint and kubernetes-validate passed"
