#!/usr/bin/env bash
# Python virtualenv with the pinned dependencies, and buf from npm.
set -euo pipefail
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,dev]'
mkdir -p .ci/.tools
if [ ! -x .ci/.tools/node_modules/.bin/buf ]; then
  (cd .ci/.tools && npm init -y >/dev/null && npm install --no-audit --no-fund --silent @bufbuild/buf@1.75.0)
fi
