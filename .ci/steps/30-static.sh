#!/usr/bin/env bash
# Lint and strict typing of our code (generated stubs excluded), the client package included.
set -euo pipefail
.venv/bin/ruff check sidecar tests scripts clients/python examples/web bench
.venv/bin/mypy
(cd clients/python && ../../.venv/bin/mypy --strict sidecar_client)
