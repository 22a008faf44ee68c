#!/usr/bin/env bash
# Regenerate sidecarv1/ from the repository's proto/ (`make go-proto`); `--check`
# regenerates into a temporary folder and fails if the committed stubs differ (CI).
#
# protoc and the plugins are Debian bookworm's (scripts/apt.d/clients.txt:
# protobuf-compiler 3.21.12, protoc-gen-go 1.28.1, protoc-gen-go-grpc 1.0 of
# grpc-go 1.33.3); other versions write other bytes. buf.gen.yaml at the root
# runs the same two plugins (`buf generate`), differing only in the header's
# protoc line.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MODULE="$(awk '$1 == "module" {print $2}' "$HERE/go.mod")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
protoc -I "$ROOT/proto" \
  --go_out="$out" --go_opt="module=$MODULE" \
  --go-grpc_out="$out" --go-grpc_opt="module=$MODULE" \
  "$ROOT/proto/sidecar/v1/identity.proto"
if [ "${1:-}" = --check ]; then
  if ! diff -r "$out/sidecarv1" "$HERE/sidecarv1" >&2; then
    echo "clients/go/sidecarv1 is stale (or made by other plugin versions: $(protoc --version), $(protoc-gen-go --version), $(protoc-gen-go-grpc --version)); run clients/go/gen.sh and commit" >&2
    exit 1
  fi
  echo "clients/go/sidecarv1 matches proto/"
  exit 0
fi
rm -f "$HERE"/sidecarv1/*.pb.go
cp "$out"/sidecarv1/*.pb.go "$HERE/sidecarv1/"
echo "regenerated clients/go/sidecarv1/"
