"""Helpers for the hardening tests: openssl-made keys and certificates, a
recording observer, a bounded load loop, JOSE checks with joserfc."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from sidecar.domain.keys import KeyHolder, PublicKeyInfo
from sidecar.ops.rotation import KeyRotator
from sidecar.service.observer import Observer
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc

UUID = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, check=True, capture_output=True).stdout


def make_rsa_key(path: Path, bits: int = 2048, passphrase: str | None = None) -> Path:
    """An RSA key made by ``openssl genpkey`` as Synerise's guide does, mode 0600."""
    args = ["genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(path)]
    if passphrase is not None:
        args += ["-aes-256-cbc", "-pass", f"pass:{passphrase}"]
    openssl(*args, cwd=path.parent)
    os.chmod(path, 0o600)
    return path


def make_ec_key(path: Path) -> Path:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=path.parent)
    os.chmod(path, 0o600)
    return path


def verifies(token: str, public_pem: str) -> bool:
    """Whether joserfc (independent of PyJWT) accepts ``token`` under ``public_pem`` with RS256."""
    try:
        jwt.decode(token, RSAKey.import_key(public_pem), algorithms=["RS256"])
    except JoseError:
        return False
    return True


class Recorder(Observer):
    """Keeps what the hooks were told (thread-safe enough: list.append is atomic)."""

    def __init__(self) -> None:
        self.rejections: list[tuple[str, str]] = []
        self.reloads: list[str] = []
        self.activated: list[str] = []

    def rejected(self, rpc: str, reason: str) -> None:
        self.rejections.append((rpc, reason))

    def key_reload(self, result: str) -> None:
        self.reloads.append(result)

    def key_activated(self, key: PublicKeyInfo) -> None:
        self.activated.append(key.key_id)


@dataclass
class LoadResult:
    #: (thread, sequence, key_id, jwt) of every successful call.
    ok: list[tuple[int, int, str, str]] = field(default_factory=list)
    #: (thread, status code name, details) of every failed call.
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    #: time.monotonic() at which each successful call returned.
    ok_at: list[float] = field(default_factory=list)


class Load:
    """``threads`` callers issuing tokens in a loop until :meth:`stop` or ``max_seconds``."""

    def __init__(self, targets: list[str], threads: int = 16, max_seconds: float = 30.0,
                 call: Callable[[pb_grpc.IdentityServiceStub], pb.Token] | None = None) -> None:
        self.targets = targets
        self.threads = threads
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.call = call or (lambda stub: stub.IssueToken(pb.IssueTokenRequest(email="load@example.com", uuid=UUID),
                                                           timeout=10).token)

    def _run(self, index: int) -> None:
        channel = grpc.insecure_channel(self.targets[index % len(self.targets)],
                                        options=[("grpc.use_local_subchannel_pool", 1)])
        stub = pb_grpc.IdentityServiceStub(channel)
        deadline = time.monotonic() + self.max_seconds
        seq = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    token = self.call(stub)
                    self.result.ok.append((index, seq, token.key_id, token.jwt))
                    self.result.ok_at.append(time.monotonic())
                except grpc.RpcError as exc:
                    self.result.failed.append((index, exc.code().name, exc.details() or ""))
                seq += 1
        finally:
            channel.close()

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def count(self) -> int:
        return len(self.result.ok) + len(self.result.failed)

    def wait_calls(self, n: int, timeout: float = 20) -> None:
        """Wait until ``n`` more calls have finished."""
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        return self.result


def wait_for(predicate: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SecretVolume:
    """A directory laid out like a Kubernetes Secret volume: ``name -> ..data/name``,
    ``..data -> ..<version>``; :meth:`publish` swaps ``..data`` atomically."""

    def __init__(self, root: Path, name: str = "private.pem") -> None:
        self.root = root
        self.name = name
        self.version = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / self.name

    def publish(self, data: bytes, mode: int = 0o600) -> None:
        self.version += 1
        vdir = self.root / f"..v{self.version}"
        vdir.mkdir()
        (vdir / self.name).write_bytes(data)
        os.chmod(vdir / self.name, mode)
        tmp = self.root / "..data_tmp"
        os.symlink(vdir.name, tmp)
        os.replace(tmp, self.root / "..data")
        if not self.path.is_symlink():
            os.symlink(f"..data/{self.name}", self.path)


def make_pki(d: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1/localhost and client
    certificates (good, second good, expired, from another CA), all by openssl."""
    d.mkdir(parents=True, exist_ok=True)

    def ca(name: str) -> None:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", f"/CN={name}", cwd=d)

    def leaf(name: str, issuer: str, cn: str, san: str, days: str = "2") -> None:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/O=Test/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", days, "-extfile", f"{name}.ext", cwd=d)

    ca("test-ca")
    ca("other-ca")
    leaf("server", "test-ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    leaf("client-a", "test-ca", "client-a", "DNS:client-a.internal,URI:spiffe://shop/app")
    leaf("client-b", "test-ca", "client-b", "DNS:client-b.internal")
    leaf("expired", "test-ca", "client-a", "DNS:client-a.internal", days="-1")
    leaf("stranger", "other-ca", "client-a", "DNS:client-a.internal")
    for p in d.glob("*.key"):
        os.chmod(p, 0o600)
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir()}


class KeyVolume:
    """A Secret volume with private.pem, and next.pem / next-activates-at beside it when published."""

    def __init__(self, root: Path, key_files: dict[str, Path]) -> None:
        self.vol = SecretVolume(root, "private.pem")
        self.key_files = key_files
        self.root = root
        self.entries: dict[str, bytes] = {}

    def publish(self, **entries: bytes | None) -> None:
        for name, data in entries.items():
            name = name.replace("_", "-").replace("next-pem", "next.pem").replace("private-pem", "private.pem")
            if data is None:
                self.entries.pop(name, None)
            else:
                self.entries[name] = data
        self.vol.version += 1
        vdir = self.root / f"..v{self.vol.version}"
        vdir.mkdir()
        for name, data in self.entries.items():
            (vdir / name).write_bytes(data)
            os.chmod(vdir / name, 0o600)
        tmp = self.root / "..data_tmp"
        os.symlink(vdir.name, tmp)
        os.replace(tmp, self.root / "..data")
        for name in ("private.pem", "next.pem", "next-activates-at"):
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)

    def key(self, name: str) -> bytes:
        return self.key_files[name].read_bytes()

    def rotator(self, holder: KeyHolder, observer: Observer, **kw: object) -> KeyRotator:
        return KeyRotator(holder, observer, str(self.root / "private.pem"),
                          next_key_file=str(self.root / "next.pem"),
                          next_activates_at=f"@{self.root / 'next-activates-at'}", **kw)  # type: ignore[arg-type]
