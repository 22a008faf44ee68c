"""docs/clients.md's PHP and curl programs ("Calling it") run as written: its ``sidecar serve`` line starts the
listener, its curl command and its PHP snippet call it, and so does the README's curl line
(only the socket path is this test's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, free_port

DOC_SOCKET = "/run/sidecar/http.sock"


def section() -> str:
    """The PHP and curl programs of "Calling it" (from ``### PHP`` to the section's end)."""
    text = (ROOT / "docs" / "clients.md").read_text()
    calling = text.split("\n## Calling it\n", 1)[1].split("\n## ", 1)[0]
    return calling.split("\n### PHP\n", 1)[1]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


def test_the_connect_section_runs_as_written(short_tmp: Path) -> None:
    serve, call = blocks("sh")
    (php_code,) = blocks("php")
    sock = str(short_tmp / "http.sock")
    assert DOC_SOCKET in serve and DOC_SOCKET in call and DOC_SOCKET in php_code
    assert "curl --unix-socket" in call and "http://localhost/sidecar.v1.IdentityService/ResolveIdentity" in call
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(ROOT),
                "SIDECAR_LISTEN": f"127.0.0.1:{free_port()}", "SIDECAR_METRICS_ADDR": ""})
    log = short_tmp / "serve.log"
    with open(log, "wb") as err:
        server = subprocess.Popen(["bash", "-c", serve.replace(DOC_SOCKET, sock)], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "Connect protocol on" not in log.read_text(errors="replace"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        assert shutil.which("curl"), "curl is needed (scripts/apt.d/clients.txt)"
        out = subprocess.run(["bash", "-c", call.replace(DOC_SOCKET, sock)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        who = json.loads(out)
        assert who["outcome"] == "OUTCOME_NEW_IDENTITY" and who["setIdentity"] and who["token"]["jwt"]
        (readme_call,) = [b for b in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
                          if "curl --unix-socket" in b]
        out = subprocess.run(["bash", "-c", readme_call.replace(DOC_SOCKET, sock)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        assert json.loads(out)["outcome"] == "OUTCOME_NEW_IDENTITY"
        php = shutil.which("php")
        assert php, "php is needed (scripts/apt.d/clients.txt)"
        script = short_tmp / "example.php"
        script.write_text(php_code.replace(DOC_SOCKET, sock).replace(
            "require 'vendor/autoload.php';", f"require '{ROOT / 'clients' / 'php' / 'autoload.php'}';"))
        r = subprocess.run([php, str(script)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().count(".") == 2, r.stdout  # the compact JWT
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        server.wait(timeout=20)
