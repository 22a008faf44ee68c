#!/usr/bin/env bash
# Lint and strict typing of our code (generated stubs excluded).
set -euo pipefail
.venv/bin/ruff check sidecar tests scripts
.venv/bin/mypy
