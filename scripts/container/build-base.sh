#!/usr/bin/env bash
# Build the local base image CI uses instead of python:3.11-slim (no image
# registry is reachable here): Debian bookworm minbase + python3 + venv, made
# with debootstrap from the Debian mirror apt already uses, then `podman import`.
#
#   scripts/container/build-base.sh            # -> $SIDECAR_BASE_IMAGE
#
# Cached: an existing image is reused; else the rootfs tarball in
# $SIDECAR_CONTAINER_CACHE is reused; else debootstrap runs (a few minutes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/container/env.sh
source "$here/env.sh"
image="$SIDECAR_BASE_IMAGE"

if podman image exists "$image"; then
  echo "base image $image: cached"
  exit 0
fi

tarball="$SIDECAR_CONTAINER_CACHE/bookworm-python3.tar"
if [ ! -s "$tarball" ]; then
  # The first Debian (not -security) mirror in apt's sources.
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -Eo 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  root="$(mktemp -d /var/tmp/sidecar-base.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from $mirror (minbase + python3) ..."
  debootstrap --variant=minbase --keyring="$keyring" \
    --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log"; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  # Slim it: no apt lists, caches, docs or man pages in the image.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  mkdir -p "$SIDECAR_CONTAINER_CACHE"
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap bookworm minbase + python3 (sidecar CI base)" \
  "$tarball" "$image" >/dev/null
echo "base image $image: imported from $tarball"
