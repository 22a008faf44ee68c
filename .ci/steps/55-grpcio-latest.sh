#!/usr/bin/env bash
# The contract tests on the newest grpcio the index offers, beside the pinned one in .venv.
# The fast call path uses grpcio's private Cython layer; here a new grpcio meets it (both
# call paths, malformed bytes, the self-test) before the `pinned` extra moves to it.
set -euo pipefail
venv="${GRPCIO_LATEST_VENV:-.venv-grpcio-latest}"
test -x "$venv/bin/python" || python3.11 -m venv "$venv" || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The package with its ranges (not the `pinned` extra) and the test tools, then the newest grpcio.
"$venv/bin/python" -m pip install -q -e '.[test]'
"$venv/bin/python" -m pip install -q --upgrade grpcio grpcio-health-checking grpcio-reflection
"$venv/bin/python" -c 'import grpc; print(f"contract tests on grpcio {grpc.__version__} (pinned: see pyproject pinned extra)")'
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_servicer.py tests/test_fastpath.py tests/test_advisory.py
