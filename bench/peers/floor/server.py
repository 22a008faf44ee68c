"""The floor under the sidecar: its own fast call path with (almost) nothing on it, for bench/run.py.

Two servers on the very grpc core server, completion queue and polling threads
the sidecar uses (:class:`sidecar.transport.fastpath.FastPath`, one thread per
CPU, SCHED_BATCH as the sidecar's default), differing only in what a call does:

- ``--mode answer``: ``IssueToken`` returns one response built at start. No
  parsing of the claims, no signature, no guards, metrics, audit or cache:
  what grpc core, HTTP/2, the kernel and the fast path's loop cost per call.
- ``--mode sign``: ``IssueToken`` signs a token for the request's email and uuid
  (JSON payload, base64url, ``cryptography``'s RS256, key parsed once), and does
  nothing else: what a fresh token costs at the least on this transport.

The sidecar's own rows minus these are what its features cost per call
(validation, the token cache, the guards, RPC and token metrics, the audit record).
``bench/ladder.py`` adds them back one at a time, each a mode here:

- ``--mode servicer``: the sidecar's servicer and use cases as ``sidecar serve``
  builds them in development mode (validation, token cache, token metrics, audit
  records on stderr), and no transport guards;
- ``--mode metrics``: and the RPC metrics (``grpc_server_*``, in-flight gauge);
- ``--mode guards``: and the admission guards (concurrency bound, rate limit, deadline);
- ``--mode pending``: and the bound on calls waiting for their request message;
- ``--mode options``: and the server's channel arguments (stream, connection and idle limits):
  all of ``sidecar serve``'s fast path but its health, self-check, key watcher and ``/metrics``.

    python bench/peers/floor/server.py [--mode MODE] KEY_FILE [HOST:PORT | unix:///PATH]

Prints ``listening HOST:PORT`` (or the ``unix://`` address) on stdout once bound; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from sidecar.ops import sched  # noqa: E402
from sidecar.transport import fastpath  # noqa: E402
from sidecar.transport.admission import PendingCalls  # noqa: E402
from sidecar.v1 import identity_pb2 as pb  # noqa: E402

HEADER = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
TTL = 24 * 3600


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Answer:
    """Every method: the same response, built once."""

    def __init__(self) -> None:
        self.response = pb.IssueTokenResponse()
        self.response.token.jwt = "x" * 520  # about a real token's length
        self.response.token.key_id = "k" * 43

    def __getattr__(self, name: str) -> object:
        return lambda _request, _context: self.response


class Sign:
    """``IssueToken`` signs the request's claims; nothing else."""

    def __init__(self, key_file: str) -> None:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SystemExit(f"{key_file}: not an RSA private key")
        self.sign = key.sign
        self.encode = json.JSONEncoder(separators=(",", ":")).encode

    def IssueToken(self, request: pb.IssueTokenRequest, _context: object) -> pb.IssueTokenResponse:
        exp = int(time.time()) + TTL
        signing_input = HEADER + b"." + b64url(self.encode({"exp": exp, "uuid": request.uuid,
                                                            "email": request.email}).encode())
        response = pb.IssueTokenResponse()
        token = response.token
        token.jwt = (signing_input + b"." + b64url(self.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
                     ).decode("ascii")
        token.expires_at.seconds = exp
        return response

    def __getattr__(self, name: str) -> object:
        return lambda _request, _context: pb.IssueTokenResponse()


#: The modes, each adding one part of the sidecar to the one before (from ``servicer`` on).
MODES = ("answer", "sign", "servicer", "metrics", "guards", "pending", "options")


def sidecar_parts(mode: str) -> tuple[Any, list[grpc.ServerInterceptor], PendingCalls | None, list[tuple[str, Any]]]:
    """The servicer, interceptors, pending-call bound and channel arguments ``sidecar serve`` builds
    (development mode, its defaults), as far as ``mode`` goes."""
    from prometheus_client import CollectorRegistry, disable_created_metrics

    from sidecar.cli import config, serve
    from sidecar.domain import keys
    from sidecar.telemetry.rpc_metrics import RpcMetrics, service_methods
    from sidecar.transport.runtime import SERVICES
    from sidecar.transport.servicer import IdentityServicer

    disable_created_metrics()  # type: ignore[no-untyped-call]
    cfg = config.from_sources({})
    registry = CollectorRegistry()
    observer = serve.make_observer(cfg, registry)
    servicer = IdentityServicer(serve.make_sidecar(cfg, keys.generate(), observer))
    opts = serve.server_options(cfg, observer, RpcMetrics(registry, service_methods(*SERVICES)))
    level = MODES.index(mode)
    interceptors = list(opts.interceptors[:1] if level >= MODES.index("metrics") else [])
    if level >= MODES.index("guards"):
        interceptors += opts.interceptors[1:]
    pending = opts.pending if level >= MODES.index("pending") else None
    options = list(opts.options) if level >= MODES.index("options") else []
    return servicer, interceptors, pending, options


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, default="answer")
    p.add_argument("key_file")
    p.add_argument("listen", nargs="?", default="127.0.0.1:0")
    a = p.parse_args()
    problem = sched.apply("batch")
    if problem:
        print(f"SCHED_BATCH not applied: {problem}", file=sys.stderr)
    interceptors: list[grpc.ServerInterceptor] = []
    pending: PendingCalls | None = None
    options: list[tuple[str, Any]] = []
    if a.mode == "answer":
        servicer: Any = Answer()
    elif a.mode == "sign":
        servicer = Sign(a.key_file)
    else:
        servicer, interceptors, pending, options = sidecar_parts(a.mode)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=options)
    fast = fastpath.FastPath(server, servicer, interceptors, threads=len(os.sched_getaffinity(0)),
                             pending=pending)
    port = server.add_insecure_port(a.listen)
    if pending is not None:
        pending.start()
    server.start()
    fast.start()
    print(f"listening {a.listen if a.listen.startswith('unix://') else a.listen.rpartition(':')[0] + ':' + str(port)}",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(0).wait()
    fast.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
