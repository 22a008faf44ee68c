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

# shellcheck source=../lib/test-sidecar.sh
source scripts/lib/test-sidecar.sh node

export SC_TEST_TCP="$tcp" SC_TEST_UNIX="$unix" SC_TEST_KEY_FILE="$tmp/private.pem" \
  SC_TEST_PUBLIC_PEM="$tmp/public.pem" SC_TEST_SIDECAR_BIN="$VENV/bin/sidecar" SC_TEST_PYTHON="$VENV/bin/python"
node --test clients/node/test/*.test.js examples/web/test/*.test.js
