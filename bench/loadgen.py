"""Bounded load generators: gRPC (grpc.aio) for the sidecar, HTTP (aiohttp) for the Flask apps and
for the sidecar's Connect listener.

Every run stops by itself at ``duration`` seconds or ``max_calls`` calls,
whichever comes first. ``concurrency`` coroutines each keep one call in
flight; gRPC calls are spread over ``channels`` channels, each with its own
connection (``grpc.use_local_subchannel_pool``), so SO_REUSEPORT can hand
them to different pre-forked workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc

REPEATED = ("repeat@bench.example", "0f8fad5b-d9cb-469f-a165-70867728950e")


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    """The load options the sidecar-only tools share (``callcost.py``, ``compare.py``)."""
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    p.add_argument("--channels", type=int, default=1,
                   help="gRPC channels (1, as a backend calls its sidecar; give 4 per worker to compare --workers)")
    p.add_argument("--repeated", action="store_true", help="one repeated identity (cache hits)")
    p.add_argument("--unix", action="store_true", help="call over the Unix socket instead of TCP")


def identity(n: int, repeated: bool) -> tuple[str, str]:
    """The n-th unique (email, uuid), or always the same one."""
    if repeated:
        return REPEATED
    return f"user{n}@bench.example", f"00000000-0000-4000-8000-{n:012x}"


@dataclass
class Result:
    """What one load run saw from the client side."""

    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


async def _drive(call: Callable[[int], object], concurrency: int, duration: float, max_calls: int | None,
                 start_at: int) -> Result:
    res = Result()
    counter = iter(range(start_at, 1 << 62))
    deadline = time.perf_counter() + duration
    limit = max_calls if max_calls is not None else 1 << 62

    async def worker() -> None:
        while time.perf_counter() < deadline and res.calls + res.errors < limit:
            n = next(counter)
            t = time.perf_counter()
            try:
                await call(n)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                res.errors += 1
                res.first_error = res.first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            res.latencies.append(time.perf_counter() - t)
            res.calls += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.seconds = time.perf_counter() - started
    return res


async def grpc_load(target: str, *, concurrency: int, duration: float, channels: int, repeated: bool,
                    max_calls: int | None = None, start_at: int = 0, ttl_seconds: int = 0) -> Result:
    """Call ``IssueToken`` on ``target`` with unique identities (or one repeated identity)."""
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, channels))]
    try:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 10) for c in chans))
        stubs = [pb_grpc.IdentityServiceStub(c) for c in chans]
        ttl = {"ttl": {"seconds": ttl_seconds}} if ttl_seconds else {}

        async def call(n: int) -> None:
            email, uuid = identity(n, repeated)
            await stubs[n % len(stubs)].IssueToken(pb.IssueTokenRequest(email=email, uuid=uuid, **ttl), timeout=30)

        return await _drive(call, concurrency, duration, max_calls, start_at)
    finally:
        await asyncio.gather(*(c.close() for c in chans))



def server_cpu_per_call(pid: int, target: str, *, concurrency: int, duration: float, channels: int,
                        repeated: bool, start_at: int = 0) -> tuple[float, Result]:
    """One :func:`grpc_load` round against ``target``: the server's (``pid`` and its workers') user +
    system CPU per call, in µs, and the round's result."""
    import procstat  # beside this file, as for the bench's other scripts

    u0, s0 = procstat.user_system_seconds(pid)
    res = asyncio.run(grpc_load(target, concurrency=concurrency, duration=duration, channels=channels,
                                repeated=repeated, start_at=start_at))
    u1, s1 = procstat.user_system_seconds(pid)
    return ((u1 - u0) + (s1 - s0)) / max(1, res.calls) * 1e6, res

async def http_load(url: str, *, concurrency: int, duration: float, repeated: bool) -> Result:
    """POST ``{"email", "uuid"}`` to the Flask apps' ``/generate-jwt``."""
    import aiohttp

    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def call(n: int) -> None:
            email, uuid = identity(n, repeated)
            async with session.post(url, json={"email": email, "uuid": uuid}) as r:
                body = await r.json()
                if r.status != 200 or "jwt" not in body:
                    raise RuntimeError(f"HTTP {r.status}: {body}")

        return await _drive(call, concurrency, duration, None, 0)


async def connect_load(target: str, *, concurrency: int, duration: float, repeated: bool,
                       max_calls: int | None = None, start_at: int = 0) -> Result:
    """Call ``IssueToken`` over the Connect protocol (JSON, HTTP/1.1 keep-alive, one connection per call
    in flight, as a pool of PHP workers would) on ``target``: ``host:port`` or ``unix:///path``."""
    import aiohttp

    if target.startswith("unix://"):
        conn: aiohttp.BaseConnector = aiohttp.UnixConnector(path=target.removeprefix("unix://"), limit=concurrency)
        url = "http://localhost/sidecar.v1.IdentityService/IssueToken"
    else:
        conn = aiohttp.TCPConnector(limit=concurrency)
        url = f"http://{target}/sidecar.v1.IdentityService/IssueToken"
    # No Accept-Encoding, as PHP's and the shell's curl send none: small answers are not worth gzip.
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def call(n: int) -> None:
            email, uuid = identity(n, repeated)
            body = json.dumps({"email": email, "uuid": uuid}).encode()
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200 or b'"jwt"' not in data:
                    raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")

        return await _drive(call, concurrency, duration, max_calls, start_at)


def one_caller(target: str, calls: int, duration: float, start_at: int = 0) -> Result:
    """One blocking caller, one call at a time, unique identities (from number ``start_at``: a run
    that follows another on the same server must not repeat its identities, which the token cache
    would answer): the latency a single request sees."""
    res = Result()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        for n in range(20):  # warm the connection and the code paths
            email, uuid = identity(10**9 + n, False)
            stub.IssueToken(pb.IssueTokenRequest(email=email, uuid=uuid), timeout=10)
        started = time.perf_counter()
        deadline = started + duration
        for n in range(calls):
            if time.perf_counter() > deadline:
                break
            email, uuid = identity(2 * 10**9 + start_at + n, False)
            t = time.perf_counter()
            stub.IssueToken(pb.IssueTokenRequest(email=email, uuid=uuid), timeout=10)
            res.latencies.append(time.perf_counter() - t)
            res.calls += 1
        res.seconds = time.perf_counter() - started
    return res
