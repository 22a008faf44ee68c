"""The Connect listener beside an in-process gRPC runtime: health follows the runtime's status
(503 while not serving), drain closes it, and an unexpected error is ``internal``, never sent."""

from __future__ import annotations

import json
from concurrent import futures
from pathlib import Path
from typing import Any

from sidecar.transport.admission import Guard
from sidecar.transport.connect import Application
from sidecar.transport.httpserver import HttpServer
from tests.test_connect import Http


class Broken(Guard):
    """A guard with a bug: it raises something that is not a refusal."""

    def check(self, rpc: str, context: Any) -> None:
        if rpc == "GetPublicKey":
            raise RuntimeError("secret detail that must not reach the caller")


def test_health_follows_the_runtime_and_bugs_are_internal(start_server, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    running = start_server()
    runtime = running.runtime
    pool = futures.ThreadPoolExecutor(2)
    app = Application(runtime.servicer, runtime.health, [Broken(running.sidecar.observer)], None, pool, 65536)
    sock = short_tmp / "h.sock"
    server = HttpServer(app.for_listener, [f"unix://{sock}", "127.0.0.1:0"], socket_mode=0o660, reuse_port=False)
    runtime.companions.append(server)
    server.start()
    try:
        for target in (f"unix://{sock}", server.addresses[1]):
            c = Http(target)
            assert c.get("/healthz") == (200, b"SERVING\n")
            status, _, body = c.post("GetPublicKey", {})
            assert (status, json.loads(body)) == (500, {"code": "internal", "message": "internal error"})
            assert c.call("IssueToken", {"email": "a@b.com", "uuid": "0b0ebd4c-3c4b-4cdf-9a53-3a1e1d8b7d2a"})[0] == 200
        runtime.set_serving(False)
        assert Http(f"unix://{sock}").get("/healthz") == (503, b"NOT_SERVING\n")
        assert Http(server.addresses[1]).call("", {}, path="/grpc.health.v1.Health/Check") == (
            200, {"status": "NOT_SERVING"})
    finally:
        runtime.drain(0)
        pool.shutdown()
    assert not sock.exists()
