#!/usr/bin/env bash
# The benchmark runs end to end for a few seconds and prints its table. No speed is checked.
set -euo pipefail
make -s install && .venv/bin/python -m pip install -q -e '.[bench]'
# Strict typing of the bench, now that its own dependencies (matplotlib, aiohttp) are installed.
.venv/bin/mypy --strict bench/run.py bench/callcost.py bench/compare.py bench/loadgen.py bench/procstat.py bench/fuzz.py bench/startup.py bench/peerproc.py \
  bench/ladder.py bench/peers/floor/server.py
# The peers (bench/peers) are part of every run: Go and golang-jwt from Debian (scripts/apt.d/bench.txt,
# installed by 10-install.sh), Node from the machine with `npm ci` run by bench/peerproc.py. Missing ones
# fail here by name rather than leaving their rows out.
for tool in go node npm; do
  command -v "$tool" >/dev/null || { echo "80-bench-smoke: \`$tool\` not found; the bench's peers need it" >&2; exit 1; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/python bench/run.py --smoke --out "$out" | tee "$out/stdout.txt"
grep -q '^| scenario | tokens/s |' "$out/stdout.txt"
grep -q '^| sidecar TCP, unique |' "$out/stdout.txt"
grep -q '^| Connect Unix, unique |' "$out/stdout.txt"
grep -q '^| Flask seed (PEM per call) |' "$out/stdout.txt"
grep -q '^| Node peer TCP, unique |' "$out/stdout.txt"
grep -q '^| Go peer TCP, unique |' "$out/stdout.txt"
grep -q '^| floor TCP: fast path, fixed answer |' "$out/stdout.txt"
grep -q '^| floor TCP: fast path, sign only |' "$out/stdout.txt"
grep -q '^one caller over the Unix socket, floor, sign only: ' "$out/stdout.txt"
# The ladder (bench/ladder.py): every step of the sidecar's fast path, a round each.
.venv/bin/python bench/ladder.py --repeated --rounds 1 --duration 0.3 | tee "$out/ladder.txt"
grep -q '^| the real server (health, self-check, /metrics) |' "$out/ladder.txt"
test -s "$out/results.json" && test -s "$out/results.png"
.venv/bin/python bench/callcost.py --rounds 1 --duration 1 | grep -q '^round 0: .* per call: server user'
.venv/bin/python bench/compare.py --rounds 2 --duration 0.5 --b-arg=--sched-policy=normal | grep -q '^A - B per pair: median'
.venv/bin/python bench/startup.py --runs 1 --calls 2 --settle 0.2 --floor-runs 1 > "$out/startup.txt"
grep -q '^  exec to SERVING ' "$out/startup.txt"
grep -q '^  floor: import grpc ' "$out/startup.txt"
# The fuzz run, small: every RPC on both call paths, no INTERNAL/UNKNOWN, no traceback (exit 1 otherwise).
.venv/bin/python bench/fuzz.py --calls 200 | grep -q '^calls: 2000; INTERNAL: 0; UNKNOWN: 0; codes not allowed: 0;'
