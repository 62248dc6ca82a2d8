"""Raw loopback servers for boundary tests: a TCP listener that records every connection
attempt (proving the IdP made none), and an HTTP server that answers one byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class ConnectionRecorder:
    """Listens on 127.0.0.1 and ::1 (same port where possible); counts accepted connections."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, int]] = []
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> ConnectionRecorder:
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        self.port = v4.getsockname()[1]
        self._sockets.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            self._sockets.append(v6)
        except OSError:
            pass
        for sock in self._sockets:
            sock.listen(16)
            sock.settimeout(0.1)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, address = sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(address[:2])
            conn.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        time.sleep(0.15)
        for sock in self._sockets:
            sock.close()


class TricklingServer:
    """An HTTP server on 127.0.0.1 that sends its answer one byte every ``interval`` seconds.

    The slow RP of RFC 9101 §10.4.1: without a total deadline one fetch from it lasts as
    long as it likes, since every single read completes well within any read timeout.
    """

    def __init__(self, body: bytes = b"eyJhbGciOiJub25lIn0.e30.", interval: float = 0.5) -> None:
        self.body = body
        self.interval = interval
        self.connections = 0
        self._stop = threading.Event()

    def __enter__(self) -> TricklingServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def url(self, path: str = "/slow") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/oauth-authz-req+jwt\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(self.body)) + self.body
        try:
            conn.recv(65536)
            for byte in answer:
                if self._stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.interval)
        except OSError:
            pass
        finally:
            conn.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._sock.close()

