#!/usr/bin/env bash
# The contract lints clean and the committed stubs match it.
set -euo pipefail
.ci/tools/node_modules/.bin/buf lint
.venv/bin/python scripts/gen_protos.py --check
