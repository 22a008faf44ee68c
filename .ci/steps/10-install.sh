#!/usr/bin/env bash
# The virtualenv (the README's own install path), Debian packages, and buf from npm.
set -euo pipefail
make -s install system
(cd .ci/tools && npm ci --no-audit --no-fund)
