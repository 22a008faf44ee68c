#!/usr/bin/env bash
# Build the Go peer (bench/peers/go) offline, as scripts/test.d/70-go.sh builds the client: Debian's
# Go, grpc-go and golang-jwt in GOPATH mode (scripts/apt.d/bench.txt), the stubs of clients/go.
#   bash bench/peers/go/build.sh OUT_BINARY
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_BINARY" >&2; exit 2; }
out="$(realpath -m "$1")"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
command -v go >/dev/null || { echo "go not found: bash scripts/setup-system.sh installs it (scripts/apt.d/bench.txt)" >&2; exit 1; }
[ -d /usr/share/gocode/src/github.com/golang-jwt/jwt ] || {
  echo "golang-jwt not found in /usr/share/gocode: bash scripts/setup-system.sh installs it (scripts/apt.d/bench.txt)" >&2; exit 1; }
MODULE="$(awk '$1 == "module" {print $2}' "$ROOT/clients/go/go.mod")"
gopath="$(mktemp -d "${TMPDIR:-/tmp}/bench-peer-go.XXXXXX")"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/$(dirname "$MODULE")" "$gopath/src/bench"
ln -s "$ROOT/clients/go" "$gopath/src/$MODULE"
ln -s "$ROOT/bench/peers/go" "$gopath/src/bench/peer"
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}"
cd "$gopath/src/bench/peer"
go build -o "$out" .
