"""A hostile HTTP/2 client for the adversarial tests and ``bench/adversarial.py``: it opens
gRPC calls (HEADERS frames) and never sends their request message, or just holds
connections open. Hand-written frames (RFC 9113) and HPACK literals (RFC 7541), no library.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (lengths under 127)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


def request_headers(path: str, authority: str = "localhost") -> bytes:
    return b"".join(_literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")))


class Conn:
    """One HTTP/2 connection; a reader thread acknowledges SETTINGS and PING and notes how streams end."""

    def __init__(self, addr: str, timeout: float = 5.0) -> None:
        if addr.startswith("unix://"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(addr.removeprefix("unix://"))
        else:
            host, _, port = addr.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self.next_stream = 1
        #: Streams the server ended (trailers with END_STREAM, or RST_STREAM).
        self.ended: set[int] = set()
        self.goaway = False
        self.closed = threading.Event()
        self.send(PREFACE + frame(SETTINGS, 0, 0))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def stall(self, path: str, calls: int = 1) -> list[int]:
        """Open ``calls`` calls of ``path`` that never send their message; their stream ids."""
        ids = []
        for _ in range(calls):
            sid, self.next_stream = self.next_stream, self.next_stream + 2
            ids.append(sid)
            self.send(frame(HEADERS, END_HEADERS, sid, request_headers(path)))
        return ids

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _read(self) -> None:
        try:
            while True:
                head = self._recv(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self._recv(length) if length else b""
                if kind == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    self.send(frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM):
                    self.ended.add(stream)
                elif kind == GOAWAY:
                    self.goaway = True
        except (OSError, ConnectionError):
            pass
        finally:
            self.closed.set()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def wait_ended(conns: list[Conn], streams: int, timeout: float) -> int:
    """Wait until the server has ended ``streams`` streams over ``conns`` (or ``timeout``); how many it ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = sum(len(c.ended) for c in conns)
        if ended >= streams or time.monotonic() > deadline:
            return ended
        time.sleep(0.05)
