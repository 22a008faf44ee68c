"""Shared fixtures: keys made by the openssl CLI exactly as Synerise's guide does,
and real gRPC servers on loopback TCP and on a Unix socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sidecar.domain import keys
from sidecar.domain.keys import KeyHolder
from sidecar.service.observer import Observer
from sidecar.service.usecases import Sidecar
from sidecar.transport.runtime import Runtime, ServerOptions, build
from sidecar.v1 import identity_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
KEYS = Path(__file__).resolve().parent / "keys"
SALT = "someString"


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, check=True, capture_output=True).stdout


@pytest.fixture(scope="session")
def openssl_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """private.pem, private.der, public.pem made by the three commands of the guide."""
    d = tmp_path_factory.mktemp("openssl-keys")
    openssl("genpkey", "-out", "private.pem", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", cwd=d)
    openssl("pkcs8", "-topk8", "-inform", "pem", "-in", "private.pem", "-outform", "DER", "-nocrypt",
            "-out", "private.der", cwd=d)
    (d / "public.pem").write_bytes(openssl("rsa", "-pubout", cwd=d, stdin=(d / "private.pem").read_bytes()))
    for name in ("private.pem", "private.der"):
        os.chmod(d / name, 0o600)
    return d


@pytest.fixture(scope="session")
def signing_key(openssl_keys: Path) -> keys.SigningKey:
    return keys.load(str(openssl_keys / "private.pem"))


@dataclass
class Running:
    """A real server and channels to it."""

    runtime: Runtime
    sidecar: Sidecar
    tcp: str
    unix: str

    def stub(self, transport: str = "tcp") -> pb_grpc.IdentityServiceStub:
        channel = grpc.insecure_channel(self.tcp if transport == "tcp" else self.unix)
        self._channels.append(channel)
        return pb_grpc.IdentityServiceStub(channel)

    def channel(self, transport: str = "tcp") -> grpc.Channel:
        channel = grpc.insecure_channel(self.tcp if transport == "tcp" else self.unix)
        self._channels.append(channel)
        return channel

    def __post_init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def close(self) -> None:
        for c in self._channels:
            c.close()
        self.runtime.drain(0)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for Unix sockets (paths are limited to ~107 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def call_path() -> str:
    """Which call path in-process servers use for IdentityService; modules override it
    with ``params=["fast", "stock"]`` to run their tests on both."""
    return "fast"


@pytest.fixture
def start_server(signing_key: keys.SigningKey, short_tmp: Path, call_path: str) -> Iterator[Callable[..., Running]]:
    """Start a real in-process server on 127.0.0.1:<ephemeral> and a Unix socket."""
    started: list[Running] = []

    def start(*, key: keys.SigningKey | None = signing_key, observer: Observer | None = None,
              clock: Callable[[], float] = time.time, opts: ServerOptions | None = None, **kw: object) -> Running:
        sidecar = Sidecar(KeyHolder(key), salt=str(kw.pop("salt", SALT)), clock=clock, observer=observer, **kw)  # type: ignore[arg-type]
        opts = opts or ServerOptions()
        opts.fast_path_threads = 2 if call_path == "fast" else 0
        sock = short_tmp / f"s{len(started)}.sock"
        runtime = build(sidecar, ["127.0.0.1:0", f"unix://{sock}"], opts)
        runtime.start()
        running = Running(runtime, sidecar, runtime.addresses[0], f"unix://{sock}")
        started.append(running)
        return running

    yield start
    for r in started:
        r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A ``sidecar`` CLI process. Its stdout and stderr go to files, never to pipes:
    the audit log writes a line per token, and an unread pipe would block the server."""

    proc: subprocess.Popen[bytes]
    addr: str
    log_dir: Path

    def stderr(self) -> str:
        return (self.log_dir / "stderr").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.log_dir / "stdout").read_text(errors="replace")

    def wait_for_stderr(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in (err := self.stderr()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not in stderr: {err}")
            time.sleep(0.02)
        return err

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        """Signal, wait (at most ``timeout``, then kill the process group); exit code and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait(timeout=10)
        self.kill_group()  # whatever the master left behind
        return self.proc.returncode, self.stderr()

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def sidecar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", *args]


def wait_serving(addr: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30,
                 log: Callable[[], str] | None = None) -> None:
    from sidecar.transport.client import health_status

    deadline = time.monotonic() + timeout
    while health_status(addr, timeout=0.5) != "SERVING":
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {proc.returncode}: {log() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"sidecar at {addr} not SERVING after {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def spawn_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proc]]:
    """Run ``sidecar serve`` as a real process; stops it afterwards."""
    procs: list[Proc] = []

    def spawn(*args: str, env: dict[str, str] | None = None, addr: str | None = None, wait: bool = True) -> Proc:
        if addr is None:
            addr = f"127.0.0.1:{free_port()}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        full_env.update({"SIDECAR_LISTEN": addr, "SIDECAR_METRICS_ADDR": "", "SIDECAR_HTTP_LISTEN": "",
                         "PYTHONPATH": str(ROOT)})
        full_env.update(env or {})
        log_dir = tmp_path_factory.mktemp("sidecar-proc")
        with open(log_dir / "stdout", "wb") as out, open(log_dir / "stderr", "wb") as err:
            p = subprocess.Popen(sidecar_cmd("serve", *args), env=full_env, cwd=ROOT,
                                 stdout=out, stderr=err, start_new_session=True)
        proc = Proc(p, addr.split(",")[0], log_dir)
        procs.append(proc)
        if wait:
            wait_serving(proc.addr, p, log=proc.stderr)
        return proc

    yield spawn
    for p in procs:
        p.stop(signal.SIGKILL, timeout=5)


PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="session")
def odd_keys(openssl_keys: Path) -> Path:
    """Keys the sidecar must load or refuse, all made by the openssl CLI."""
    d = openssl_keys.parent / "odd-keys"
    d.mkdir(exist_ok=True)
    openssl("rsa", "-in", str(openssl_keys / "private.pem"), "-traditional", "-out", "pkcs1.pem", cwd=d)
    (d / "pass.txt").write_bytes(PASSPHRASE + b"\n")
    (d / "wrong-pass.txt").write_bytes(b"not the passphrase\n")
    openssl("pkcs8", "-topk8", "-in", str(openssl_keys / "private.pem"), "-v2", "aes-256-cbc",
            "-passout", "file:pass.txt", "-out", "encrypted.pem", cwd=d)
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "rsa1024.pem", cwd=d)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem", cwd=d)
    openssl("genpkey", "-algorithm", "ED25519", "-out", "ed25519.pem", cwd=d)
    (d / "garbage.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    (d / "random.bin").write_bytes(os.urandom(600))
    (d / "empty.pem").write_bytes(b"")
    for p in d.iterdir():
        os.chmod(p, 0o600)
    return d
