#!/usr/bin/env bash
# Alert rules are valid and pass their unit tests (written with the Prometheus
# Operator's labels); the PrometheusRule is the rule file's current copy; a live
# /metrics scrape passes promtool's lint.
set -euo pipefail
make -s install
bash scripts/setup-system.sh   # prometheus + promtool (scripts/apt.d/obs.txt)
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)
.venv/bin/python scripts/gen_prometheus_rule.py --check
python3 -m json.tool deploy/grafana/sidecar.json >/dev/null

port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_addr="127.0.0.1:$(port)"; metrics_addr="127.0.0.1:$(port)"
log=$(mktemp)
SIDECAR_LISTEN="$grpc_addr" SIDECAR_METRICS_ADDR="$metrics_addr" SIDECAR_AUDIT_LEVEL=OFF \
  .venv/bin/sidecar serve 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  .venv/bin/sidecar health --addr "$grpc_addr" --timeout 0.5 >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
.venv/bin/sidecar health --addr "$grpc_addr" >/dev/null
.venv/bin/python - "$metrics_addr" <<'PY' | promtool check metrics
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode())
PY
echo "promtool: rules, rule tests and live metrics OK"
