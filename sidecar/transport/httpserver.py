"""The HTTP server under the Connect listener: granian, embedded, on sockets this module binds.

granian (Rust HTTP/1.1 and HTTP/2, the fastest of the ASGI servers measured
for this path, see docs/performance.md) runs in this process, on an asyncio
loop of its own thread, so it serves the same use cases, key holder and
metrics registry as the gRPC server. The sockets are bound here, not by
granian, so they follow the gRPC listener's rules: a Unix socket gets
``socket_mode`` (0660) and a stale file that is not a socket is refused;
a TCP port is shared with sibling workers (SO_REUSEPORT) only when asked,
port 0 reports the port it got, and with TLS configured every TCP listener
speaks TLS (1.2 or later) and, with a client CA, requires a client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.server.embed import Server

from sidecar.domain import errors
from sidecar.transport.runtime import check_unix_listen

log = logging.getLogger("sidecar.http")

SETTING = "SIDECAR_HTTP_LISTEN"
BACKLOG = 1024


def bind(addr: str, *, socket_mode: int, reuse_port: bool) -> tuple[socket.socket, str]:
    """A listening socket for ``addr`` and the address it answers on (the real port for ``:0``)."""
    if addr.startswith("unix://"):
        path = check_unix_listen(addr, SETTING)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, socket_mode)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise errors.ConfigError(f"{SETTING}: cannot listen on {addr} ({exc.strerror})") from None
        return sock, addr
    host, _, port = addr.rpartition(":")
    bare = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, int(port)))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(f"{SETTING}: cannot listen on {addr} ({exc.strerror})") from None
    return sock, f"{host}:{sock.getsockname()[1]}"


class _OnSocket(Server):
    """granian's embedded server on a socket bound by us (it would bind its own, always with SO_REUSEPORT)."""

    def __init__(self, app: Any, sock: socket.socket, unix: bool, **kwargs: Any) -> None:
        super().__init__(app, interface=Interfaces.ASGINL, http=HTTPModes.auto, log_enabled=False,
                         websockets=False, backlog=BACKLOG, **kwargs)
        self._our_socket = sock
        self._unix = unix

    def _init_shared_socket(self) -> None:
        # granian's stub omits the constructor: SocketHolder(fd, uds, backlog) adopts a bound socket.
        self._shd = SocketHolder(os.dup(self._our_socket.fileno()), self._unix, BACKLOG)  # type: ignore[call-arg,assignment]
        self._ssp = None

    @property
    def _bind_addr_fmt(self) -> str:
        return str(self._our_socket.getsockname())


@dataclass(frozen=True)
class Tls:
    """TLS for the TCP listeners, from PEM files; with ``client_ca`` the handshake requires a client certificate."""

    cert: str
    key: str
    client_ca: str | None = None

    def options(self) -> dict[str, Any]:
        for setting, path in (("SIDECAR_TLS_CERT", self.cert), ("SIDECAR_TLS_KEY", self.key),
                              ("SIDECAR_TLS_CLIENT_CA", self.client_ca)):
            if path is not None and not os.access(path, os.R_OK):
                raise errors.ConfigError(f"{setting}: cannot read {path}")
        return {"ssl_cert": Path(self.cert), "ssl_key": Path(self.key), "ssl_protocol_min": SSLProtocols.tls12,
                "ssl_ca": Path(self.client_ca) if self.client_ca else None,
                "ssl_client_verify": self.client_ca is not None}


class HttpServer:
    """granian serving ``app_for(unix)`` (the ASGI application as a Unix or TCP listener serves it) until :meth:`stop`."""

    def __init__(self, app_for: Callable[[bool], Any], listen: Sequence[str], *, socket_mode: int, reuse_port: bool,
                 unix: bool = True, optional: bool = False, tls: Tls | None = None) -> None:
        """``optional``: an address that cannot be bound is skipped with a warning (development mode's default)."""
        self.addresses: list[str] = []
        self._sockets: list[tuple[socket.socket, bool, Any]] = []
        self._paths: list[Path] = []
        for addr in listen:
            is_unix = addr.startswith("unix://")
            if is_unix and not unix:
                continue
            try:
                sock, bound = bind(addr, socket_mode=socket_mode, reuse_port=reuse_port)
            except errors.ConfigError as exc:
                if not optional:
                    raise
                log.warning("development mode: %s; the Connect listener is off there (set SIDECAR_HTTP_LISTEN)", exc)
                continue
            self.addresses.append(bound)
            self._sockets.append((sock, is_unix, app_for(is_unix)))
            if is_unix:
                self._paths.append(Path(addr.removeprefix("unix://")))
        self._tls = tls.options() if tls is not None else {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[_OnSocket] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = False
        logging.getLogger("granian").setLevel(logging.ERROR)  # "embedded server is experimental", per listener

    def start(self) -> None:
        if not self._sockets:
            return
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # Unix sockets stay plaintext, as the gRPC listener's: the file mode is their access control.
        self._servers = [_OnSocket(app, sock, is_unix, **({} if is_unix else self._tls))
                         for sock, is_unix, app in self._sockets]

        async def main() -> None:
            tasks = [asyncio.create_task(s.serve()) for s in self._servers]
            loop.call_soon(self._ready.set)
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    def stop(self, grace: float) -> None:
        """Stop accepting, let calls in flight finish within ``grace``, close the sockets (once)."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop is not None and self._thread is not None and not self._loop.is_closed():
            for s in self._servers:
                try:
                    self._loop.call_soon_threadsafe(s.stop)
                except RuntimeError:  # the loop ended meanwhile: nothing left to stop
                    break
            self._thread.join(grace + 1)
            if self._thread.is_alive():
                log.warning("HTTP listener still busy after the grace period; leaving it")
        for sock, _, _ in self._sockets:
            sock.close()
        for path in self._paths:
            path.unlink(missing_ok=True)
