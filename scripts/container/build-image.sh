#!/usr/bin/env bash
# Build the sidecar image with podman on the local base, as CI does.
#
#   scripts/container/build-image.sh [TAG]     # default localhost/sidecar:dev
#
# The base comes from build-base.sh (no image registry is reachable here). pip
# inside the build reaches PyPI; the machine's CA bundle goes in as a build
# secret (never into a layer) and PIP_INDEX_URL, if set, as a build argument.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/container/env.sh
source "$here/env.sh"
tag="${1:-localhost/sidecar:dev}"
bash "$here/build-base.sh"

args=(--format docker --network host --layers=false --pull=never
      --build-arg "BASE_IMAGE=$SIDECAR_BASE_IMAGE" --tag "$tag")
cert="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
[ -s "$cert" ] && args+=(--secret "id=pip_cert,src=$cert")
[ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
podman build "${args[@]}" "$here/../.."
