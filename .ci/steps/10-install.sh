#!/usr/bin/env bash
# The virtualenv (the README's own install path), Debian packages, and buf from npm.
set -euo pipefail
make -s install system
mkdir -p .ci/.tools
if [ ! -x .ci/.tools/node_modules/.bin/buf ]; then
  (cd .ci/.tools && npm init -y >/dev/null && npm install --no-audit --no-fund --silent @bufbuild/buf@1.75.0)
fi
