#!/usr/bin/env bash
# The virtualenv (the README's own install path), Debian packages, and buf from npm.
set -euo pipefail
make -s install system
(cd .ci/tools && npm install --no-audit --no-fund)  # not `npm ci`: the registry here lacks buf's other-platform optional packages, which `npm ci` insists on
