#!/usr/bin/env bash
# Lint and strict typing of our code (generated stubs excluded), the client package included.
set -euo pipefail
.venv/bin/ruff check sidecar tests scripts clients/python examples/web bench
.venv/bin/mypy
(cd clients/python && ../../.venv/bin/mypy --strict sidecar_client)
# The layer rules (import-linter contracts in pyproject.toml): a wrong-way import fails here.
.venv/bin/lint-imports --no-cache
