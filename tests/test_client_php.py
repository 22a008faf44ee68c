"""The PHP client (clients/php) against a real ``sidecar serve``, over TCP and the Unix socket.

Debian's ``php-cli`` and ``php-curl`` (scripts/apt.d/clients.txt) run clients/php/tests/run.php;
required, never skipped. Also a dead socket (``unavailable``, retried) and a listener that
never answers (``deadline_exceeded``, not retried).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, SALT, free_port

PHP_DIR = ROOT / "clients" / "php"


def php() -> str:
    path = shutil.which("php")
    assert path, "php is needed: `make system` installs php-cli and php-curl (scripts/apt.d/clients.txt)"
    mods = subprocess.run([path, "-m"], capture_output=True, text=True, check=True).stdout.split()
    assert "curl" in mods, "php-curl is needed (scripts/apt.d/clients.txt)"
    return path


@pytest.fixture
def php_sidecar(spawn_sidecar, short_tmp: Path, openssl_keys: Path):  # type: ignore[no-untyped-def]
    sock = short_tmp / "http.sock"
    port = free_port()
    spawn_sidecar(env={"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": SALT,
                       "SIDECAR_HTTP_LISTEN": f"unix://{sock},127.0.0.1:{port}"}).wait_for_stderr("Connect protocol on")
    return f"unix://{sock}", f"127.0.0.1:{port}"


def test_php_client_against_the_real_sidecar(php_sidecar: tuple[str, str], short_tmp: Path) -> None:
    unix, tcp = php_sidecar
    with socket.socket() as blackhole:  # accepts connections (the kernel's backlog) and never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        r = subprocess.run([php(), str(PHP_DIR / "tests" / "run.php"), unix, f"http://{tcp}", "--",
                            f"unix://{short_tmp}/nobody-here.sock", f"127.0.0.1:{blackhole.getsockname()[1]}"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 passed, 0 failed" in r.stdout, r.stdout


def test_php_readme_example_runs_as_written(php_sidecar: tuple[str, str], tmp_path: Path) -> None:
    """The README's example, with the socket path of this test's sidecar."""
    unix, _ = php_sidecar
    readme = (PHP_DIR / "README.md").read_text()
    code = readme.split("```php\n", 1)[1].split("```", 1)[0]
    assert "unix:///run/sidecar/http.sock" in code
    script = tmp_path / "example.php"
    script.write_text(code.replace("unix:///run/sidecar/http.sock", unix).replace(
        "vendor/autoload.php", str(PHP_DIR / "autoload.php")))
    r = subprocess.run([php(), str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HTTP_COOKIE": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(".") >= 2 and "OUTCOME" not in r.stdout  # a JWT: three base64url parts
