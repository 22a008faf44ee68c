#!/usr/bin/env bash
# Install the Debian packages the test suite needs (listed one per line in
# scripts/apt.d/*.txt), skipping those already installed. Needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")"
mapfile -t wanted < <(cat apt.d/*.txt 2>/dev/null | sed 's/#.*//' | awk 'NF {print $1}' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
