"""The figures of issue 15's "Numbers": a legitimate caller under each hostile load.

For each attack in turn a fresh ``sidecar serve`` (default settings, a real key file,
``--health-listen``, ``/metrics``) runs while the attack goes on and a legitimate
caller, on a channel it opened before, makes ``IssueToken`` calls (distinct emails:
every one signs) with a 1 s deadline. Measured during the attack: the share of the
legitimate calls that succeeded, health ``Check`` latency (a fresh channel to the
health listener, 1 s deadline), whether ``/metrics`` answers, whether a key rotation
(the key file rewritten) is taken up within 5 s; then SIGTERM goes in *with the attack
still on* and the time to exit is measured against grace + 5 s; peak RSS (``VmHWM``).

Attacks (``--attacks``, all by default):

* ``stalled``: 300 calls that send headers but never their request message, no deadline,
  reopened as the server cancels them;
* ``idle``: 1,100 idle connections, the server under ``ulimit -n 1024``;
* ``watch``: 10,000 health ``Watch`` calls with unique ~900-byte names on the health
  listener, each cancelled after its first answer;
* ``stderr``: the server's stderr a pipe nobody reads, while a second caller issues
  cached tokens as fast as it can (the audit queue and the pipe fill);
* ``tokens``: 200,000 distinct-email tokens (``--tokens``), then the RSS.

    python bench/adversarial.py                          # everything (several minutes on 2 cores)
    python bench/adversarial.py --attacks stalled,watch --phase 5 --tokens 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import peak_rss_mib  # noqa: E402
from run import free_port  # noqa: E402
from stall_client import PREFACE, SETTINGS, Conn, frame  # noqa: E402

from sidecar.domain import keys  # noqa: E402
from sidecar.v1 import identity_pb2 as pb  # noqa: E402
from sidecar.v1 import identity_pb2_grpc as pb_grpc  # noqa: E402

GRACE = 10.0
#: What the attacks did (calls made), reported with the figures.
STATS: dict[str, int] = {}
UUID = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"


def write_key(path: Path) -> str:
    key = keys.generate()
    tmp = path.with_suffix(".tmp")
    _write_pem(key, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key.key_id


def _write_pem(key: keys.SigningKey, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))


class Server:
    def __init__(self, work: Path, *, stderr: int | None = None, nofile: int | None = None) -> None:
        self.addr, self.health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.key = work / "key.pem"
        self.key_id = write_key(self.key)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env.update({"SIDECAR_LISTEN": self.addr, "SIDECAR_HEALTH_LISTEN": self.health,
                    "SIDECAR_METRICS_ADDR": self.metrics, "SIDECAR_KEY_FILE": str(self.key),
                    "SIDECAR_UUID_SALT": "bench", "PYTHONPATH": str(ROOT), "SIDECAR_GRACE": f"{GRACE:g}s"})
        self.log = open(work / "stderr", "wb")

        def limit() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([sys.executable, "-m", "sidecar", "serve"], env=env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=stderr if stderr is not None else self.log,
                                     preexec_fn=limit, start_new_session=True)
        deadline = time.monotonic() + 30
        while check_seconds(self.addr)[0] != "SERVING":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"sidecar did not start: {(work / 'stderr').read_text()}")
            time.sleep(0.1)

    def rotate(self, timeout: float = 5.0) -> bool:
        """Rewrite the key file; whether GetPublicKey names the new key within ``timeout``."""
        new = write_key(self.key)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.addr) as ch:
            stub = pb_grpc.IdentityServiceStub(ch)
            while time.monotonic() < deadline:
                try:
                    if stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=1).key_id == new:
                        return True
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        return False

    def stop(self) -> float:
        """SIGTERM; seconds to exit (inf: killed at grace + 10 s)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=GRACE + 10)
            took = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            took = float("inf")
        self.log.close()
        return took


def check_seconds(addr: str, timeout: float = 1.0) -> tuple[str, float]:
    started = time.monotonic()
    with grpc.insecure_channel(addr) as ch:
        try:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as exc:
            name = exc.code().name
    return name, time.monotonic() - started


def metric(addr: str, name: str, contains: str = "") -> float:
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and contains in line)


def metrics_ok(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
            return r.status == 200 and b"sidecar_tokens_issued_total" in r.read()
    except OSError:
        return False


class Legit:
    """IssueToken with distinct emails, 1 s deadline, on a channel opened (and used) before the attack."""

    def __init__(self, addr: str) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.stub = pb_grpc.IdentityServiceStub(self.channel)
        self.stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=5)
        self.ok = self.total = 0
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._n += 1
            self.total += 1
            try:
                self.stub.IssueToken(pb.IssueTokenRequest(email=f"legit{self._n}@b.example", uuid=UUID), timeout=1)
                self.ok += 1
            except grpc.RpcError:
                pass
            time.sleep(0.02)

    def start(self) -> Legit:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.channel.close()


# -- attacks: each a function (server, stop event) run on its own thread ------------------------


def attack_stalled(server: Server, stop: threading.Event) -> None:
    conns = [Conn(server.addr) for _ in range(30)]
    for c in conns:
        c.stall("/sidecar.v1.IdentityService/IssueToken", 10)  # 300 in all
    while not stop.wait(0.5):  # reopen what the server ended, as a persistent attacker would
        for i, c in enumerate(conns):
            if c.closed.is_set() or c.goaway:
                c.close()
                try:
                    conns[i] = c = Conn(server.addr)
                except OSError:
                    continue
            ended = len(c.ended)
            open_now = (c.next_stream - 1) // 2 - ended
            if open_now < 10:
                try:
                    c.stall("/sidecar.v1.IdentityService/IssueToken", 10 - open_now)
                except OSError:
                    pass
    for c in conns:
        c.close()


def attack_idle(server: Server, stop: threading.Event, count: int = 1100) -> None:
    host, _, port = server.addr.rpartition(":")
    socks: list[socket.socket] = []
    for _ in range(count):
        if stop.is_set():
            break
        try:
            s = socket.create_connection((host, int(port)), timeout=2)
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            socks.append(s)
        except OSError:
            time.sleep(0.01)
    stop.wait()
    for s in socks:
        s.close()


def attack_watch(server: Server, stop: threading.Event, calls: int = 10_000, threads: int = 8) -> None:
    def run(t: int) -> None:
        with grpc.insecure_channel(server.health) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for i in range(t, calls, threads):
                if stop.is_set():
                    return
                stream = stub.Watch(health_pb2.HealthCheckRequest(service=f"{i:08d}".ljust(900, "x")), timeout=2)
                STATS["watch_calls"] = STATS.get("watch_calls", 0) + 1
                try:
                    next(stream)
                except (grpc.RpcError, StopIteration):
                    pass
                stream.cancel()

    workers = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def attack_stderr(server: Server, stop: threading.Event) -> None:
    with grpc.insecure_channel(server.addr) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        while not stop.is_set():
            try:
                stub.ResolveIdentity(pb.ResolveIdentityRequest(email="filler@b.example"), timeout=2)
            except grpc.RpcError:
                pass


ATTACKS: dict[str, Callable[[Server, threading.Event], None]] = {
    "stalled": attack_stalled, "idle": attack_idle, "watch": attack_watch, "stderr": attack_stderr}


def run_attack(name: str, phase: float) -> dict[str, object]:
    STATS.clear()
    with tempfile.TemporaryDirectory(prefix="sc15-bench-") as d:
        work = Path(d)
        read_end = write_end = None
        if name == "stderr":
            read_end, write_end = os.pipe()
        server = Server(work, stderr=write_end, nofile=1024 if name == "idle" else None)
        if write_end is not None:
            os.close(write_end)
        legit = Legit(server.addr).start()
        stop = threading.Event()
        attacker = threading.Thread(target=ATTACKS[name], args=(server, stop), daemon=True)
        attacker.start()
        time.sleep(min(3.0, phase / 2))  # let the attack build up
        checks = []
        metrics = []
        end = time.monotonic() + phase
        while time.monotonic() < end:
            checks.append(check_seconds(server.health))
            if os.environ.get("BENCH_DEBUG"):
                print(checks[-1], len(os.listdir(f"/proc/{server.proc.pid}/fd")), flush=True)
            metrics.append(metrics_ok(server.metrics))
            time.sleep(0.5)
        rotated = server.rotate()
        dropped = metric(server.metrics, "sidecar_audit_dropped_total")
        refused = (metric(server.metrics, "sidecar_token_rejections_total", 'reason="too_many_pending"')
                   + metric(server.metrics, "sidecar_token_rejections_total", 'reason="request_timeout"'))
        legit.stop()
        rss = peak_rss_mib(server.proc.pid)
        took = server.stop()  # the attack still on
        stop.set()
        attacker.join(timeout=10)
        if read_end is not None:
            os.close(read_end)
        latencies = [s for _, s in checks]
        return {
            "attack": name, "legit_ok": legit.ok, "legit_total": legit.total,
            "legit_pct": 100.0 * legit.ok / max(1, legit.total),
            "check_serving": sum(1 for st, _ in checks if st == "SERVING"), "checks": len(checks),
            "check_p50_ms": 1000 * statistics.median(latencies), "check_max_ms": 1000 * max(latencies),
            "metrics_ok": f"{sum(metrics)}/{len(metrics)}", "rotation": rotated,
            "sigterm_s": took, "peak_rss_mib": rss, "audit_dropped": dropped, "stalled_ended": refused,
            **STATS,
        }


def run_tokens(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="sc15-bench-") as d:
        server = Server(Path(d))
        done = [0]
        lock = threading.Lock()

        def issue(t: int, threads: int) -> None:
            with grpc.insecure_channel(server.addr) as ch:
                stub = pb_grpc.IdentityServiceStub(ch)
                for i in range(t, count, threads):
                    email = f"u{i:07d}." + "x" * 220 + "@example.com"  # long distinct emails, as in the issue
                    try:
                        stub.ResolveIdentity(pb.ResolveIdentityRequest(email=email), timeout=10)
                    except grpc.RpcError:
                        continue
                    with lock:
                        done[0] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=issue, args=(t, 8)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss = peak_rss_mib(server.proc.pid)
        took = server.stop()
        return {"attack": f"tokens x{count}", "issued": done[0], "seconds": time.monotonic() - started,
                "peak_rss_mib": rss, "sigterm_s": took}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attacks", default="stalled,idle,watch,stderr,tokens")
    ap.add_argument("--phase", type=float, default=10.0, help="seconds of measurement under each attack")
    ap.add_argument("--tokens", type=int, default=200_000)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker needs > 1,100 sockets
    for name in args.attacks.split(","):
        result = run_tokens(args.tokens) if name == "tokens" else run_attack(name, args.phase)
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()),
              flush=True)


if __name__ == "__main__":
    main()
