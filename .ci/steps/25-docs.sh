#!/usr/bin/env bash
# The documentation site builds with no warning (broken links, anchors, pages missing from nav).
set -euo pipefail
make -s install
.venv/bin/python -m pip install -q -e '.[docs]'
.venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)"
.venv/bin/python scripts/gen_settings_doc.py --check
