# Source me: the podman environment the container tests and CI use.
# shellcheck shell=bash
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${_here}/containers.conf"
# Where the debootstrap tarball of the local base is cached between runs.
export SIDECAR_CONTAINER_CACHE="${SIDECAR_CONTAINER_CACHE:-/var/cache/sidecar-container}"
# The locally built base image the Dockerfile's BASE_IMAGE points at in CI.
export SIDECAR_BASE_IMAGE="${SIDECAR_BASE_IMAGE:-localhost/sidecar-base:bookworm}"
unset _here
