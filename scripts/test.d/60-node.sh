#!/usr/bin/env bash
# Node client tests and the browser test of examples/web (`make test` runs this after pytest).
# Installs the npm packages with `npm ci`, makes an RSA key with openssl as Synerise's guide
# does, starts a real `sidecar serve` on 127.0.0.1 and a Unix socket, runs `node --test`,
# and tears everything down.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"

for dir in clients/node examples/web; do
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
done

tmp="$(mktemp -d /tmp/sc-node-XXXXXX)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

openssl genpkey -out "$tmp/private.pem" -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null
openssl rsa -pubout < "$tmp/private.pem" > "$tmp/public.pem" 2>/dev/null
chmod 600 "$tmp/private.pem"

port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
tcp="127.0.0.1:$port"
unix="unix://$tmp/sidecar.sock"
env -u SIDECAR_WORKERS SIDECAR_LISTEN="$tcp,$unix" SIDECAR_METRICS_ADDR="" SIDECAR_KEY_FILE="$tmp/private.pem" \
  SIDECAR_UUID_SALT=someString SIDECAR_LOG_LEVEL=WARNING "$VENV/bin/sidecar" serve &
pid=$!
for _ in $(seq 1 150); do
  "$VENV/bin/sidecar" health --addr "$tcp" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "sidecar exited during start-up" >&2; exit 1; }
  sleep 0.2
done
"$VENV/bin/sidecar" health --addr "$tcp" >/dev/null

export SC_TEST_TCP="$tcp" SC_TEST_UNIX="$unix" SC_TEST_KEY_FILE="$tmp/private.pem" \
  SC_TEST_PUBLIC_PEM="$tmp/public.pem" SC_TEST_SIDECAR_BIN="$VENV/bin/sidecar" SC_TEST_PYTHON="$VENV/bin/python"
node --test clients/node/test/*.test.js examples/web/test/*.test.js
