#!/usr/bin/env bash
# The benchmark runs end to end for a few seconds and prints its table. No speed is checked.
set -euo pipefail
make -s install && .venv/bin/python -m pip install -q -e '.[bench]'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/python bench/run.py --smoke --out "$out" | tee "$out/stdout.txt"
grep -q '^| scenario | tokens/s |' "$out/stdout.txt"
grep -q '^| sidecar TCP, unique |' "$out/stdout.txt"
grep -q '^| Flask seed (PEM per call) |' "$out/stdout.txt"
test -s "$out/results.json" && test -s "$out/results.png"
