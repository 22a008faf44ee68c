"""docs/clients.md "Calling it": each language's program runs as written against a real sidecar.

The programs are taken from the page (the first fenced block under each
``### <language>`` heading of the section) and run unchanged but for the
socket address, ``unix:///run/sidecar/sidecar.sock``, which becomes the test
server's. Each prints ``<uuid> <set_identity> <jwt>``; the token is verified
with joserfc against the openssl-made public key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from tests.conftest import ROOT, Running

DOC = ROOT / "docs" / "clients.md"
ADDRESS = "unix:///run/sidecar/sidecar.sock"
EMAIL = "customer@synerise.com"
COOKIE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
GO_MODULE = "github.com/synerise-sidecar/synerise-identity-sidecar/clients/go"


def section(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"docs/clients.md has no '## {title}' section"
    return match.group(1)


def program(language: str) -> tuple[str, str]:
    """The first fenced block under ``### language`` in "Calling it": (fence info, code)."""
    match = re.search(rf"^### {re.escape(language)}\n.*?^```(\w+)\n(.*?)^```$", section("Calling it"), re.M | re.S)
    assert match, f"no code block under '### {language}' in Calling it"
    assert ADDRESS in match.group(2)
    return match.group(1), match.group(2)


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: `make system` installs it (scripts/apt.d/clients.txt)"
    return path


def node_modules() -> Path:
    """The Node client's dependencies, installed as scripts/test.d/60-node.sh does when absent."""
    pkg = ROOT / "clients/node"
    if not (pkg / "node_modules/@grpc/grpc-js").is_dir():
        subprocess.run([need("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=pkg, check=True,
                       capture_output=True)
    return pkg


def run_python(code: str, tmp: Path) -> list[str]:
    (tmp / "login.py").write_text(code)
    return [sys.executable, "-I", str(tmp / "login.py")]


def run_node(code: str, tmp: Path) -> list[str]:
    # The package as installed under its name (a link to the checkout's folder, whose dependencies it resolves).
    scope = tmp / "node_modules/@synerise-sidecar"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(node_modules())
    (tmp / "login.mjs").write_text(code)
    return [need("node"), str(tmp / "login.mjs")]


def run_go(code: str, tmp: Path) -> list[str]:
    # Offline, GOPATH mode, against Debian's grpc-go, as scripts/test.d/70-go.sh builds the module.
    link = tmp / "gopath/src" / GO_MODULE
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT / "clients/go")
    (tmp / "login.go").write_text(code)
    unformatted = subprocess.run([need("gofmt"), "-l", str(tmp / "login.go")], capture_output=True, text=True, check=True)
    assert unformatted.stdout == "", "the Go program in docs/clients.md is not gofmt-formatted"
    return [need("go"), "run", str(tmp / "login.go")]


RUNNERS: dict[str, tuple[str, Callable[[str, Path], list[str]]]] = {
    "Python": ("python", run_python),
    "Node": ("js", run_node),
    "Go": ("go", run_go),
}


@pytest.mark.parametrize("language", RUNNERS)
def test_calling_it_runs_as_written(language: str, start_server: Callable[..., Running], openssl_keys: Path,
                                    tmp_path: Path) -> None:
    fence, run = RUNNERS[language]
    info, code = program(language)
    assert info == fence
    server = start_server()
    cmd = run(code.replace(ADDRESS, server.unix), tmp_path)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp_path / 'gopath'}:/usr/share/gocode"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    uuid, set_identity, token = r.stdout.split()
    assert (uuid, set_identity.lower()) == (COOKIE_UUID, "true")
    claims = jose_jwt.decode(token, RSAKey.import_key((openssl_keys / "public.pem").read_bytes()), algorithms=["RS256"]).claims
    assert (claims["uuid"], claims["email"]) == (COOKIE_UUID, EMAIL)


def test_every_calling_it_heading_is_run() -> None:
    """A language added to the section without a runner here fails, rather than going untested."""
    headings = re.findall(r"^### (.+)$", section("Calling it"), re.M)
    assert set(RUNNERS) <= set(headings)
    untested = set(headings) - set(RUNNERS) - {"curl", "PHP"}  # tests/test_docs_connect.py runs those two
    assert not untested, untested
