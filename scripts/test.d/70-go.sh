#!/usr/bin/env bash
# Go client tests (clients/go), offline: Debian's Go and grpc-go in GOPATH mode
# (scripts/apt.d/clients.txt; no module proxy is needed). Checks gofmt and go vet,
# makes an RSA key with openssl as Synerise's guide does, starts a real
# `sidecar serve` on 127.0.0.1 and a Unix socket, runs `go test`, tears down.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
MODULE="$(awk '$1 == "module" {print $2}' clients/go/go.mod)"

SIDECAR_AUDIT_LEVEL=OFF
# shellcheck source=../lib/test-sidecar.sh
source scripts/lib/test-sidecar.sh go

# GOPATH mode: the module's directory appears at its import path in a GOPATH of
# its own; grpc-go and protobuf come from Debian's /usr/share/gocode.
mkdir -p "$tmp/gopath/src/$(dirname "$MODULE")"
ln -s "$ROOT/clients/go" "$tmp/gopath/src/$MODULE"
packages=("$MODULE/sidecarv1" "$MODULE/sidecar")  # named: `...` does not follow the link
export GO111MODULE=off GOPATH="$tmp/gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}"
unformatted="$(gofmt -l clients/go)"
[ -z "$unformatted" ] || { echo "gofmt: $unformatted" >&2; exit 1; }
go vet "${packages[@]}"


# A second sidecar on TCP with TLS that requires client certificates (mTLS), from an openssl-made CA.
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
(
  cd "$tmp"
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null
  echo "subjectAltName=DNS:sidecar.test" > san.ext
  for name in server client; do
    ext=(); [ "$name" = server ] && ext=(-extfile san.ext)
    openssl req "${ec[@]}" -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" -days 1 "${ext[@]}" 2>/dev/null
  done
  chmod 600 server.key client.key
)
tls_port="$(free_port)"
tls="127.0.0.1:$tls_port"
env -u SIDECAR_WORKERS SIDECAR_LISTEN="$tls" SIDECAR_METRICS_ADDR="" SIDECAR_KEY_FILE="$tmp/private.pem" \
  SIDECAR_UUID_SALT="$salt" SIDECAR_TLS_CERT="$tmp/server.pem" SIDECAR_TLS_KEY="$tmp/server.key" \
  SIDECAR_TLS_CLIENT_CA="$tmp/ca.pem" SIDECAR_LOG_LEVEL=WARNING SIDECAR_AUDIT_LEVEL=OFF "$VENV/bin/sidecar" serve &
tls_pid=$!
trap 'kill -TERM $tls_pid 2>/dev/null || true; wait $tls_pid 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null && break
  kill -0 "$tls_pid" 2>/dev/null || { echo "the TLS sidecar exited during start-up" >&2; exit 1; }
  sleep 0.2
done

SC_TEST_TCP="$tcp" SC_TEST_UNIX="$unix" SC_TEST_PUBLIC_PEM="$tmp/public.pem" SC_TEST_SALT="$salt" \
  SC_TEST_TLS="$tls" SC_TEST_TLS_DIR="$tmp" go test -count=1 "${packages[@]}"
