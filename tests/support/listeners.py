"""Loopback servers for boundary tests: a TCP listener that records every connection
attempt (proving the IdP made none), an HTTP server that answers one byte at a time, and
a real multi-worker ``idp serve`` subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import requests
from cryptography.hazmat.primitives.serialization import Encoding

from idp.proofing.demo_card import TestJpkiCA


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


@contextlib.contextmanager
def served_idp(tmp: Path, jpki_ca: TestJpkiCA, *, workers: int = 2,
               env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A real ``idp serve --workers N`` (gunicorn gthread) on loopback; yields its base URL.

    SQLite or, with ``IDP_TEST_DATABASE_URL``, a fresh PostgreSQL database; the server log
    is ``tmp/serve.log``. A traceback in the log fails the caller's test at exit.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    anchors = tmp / "jpki"
    anchors.mkdir(parents=True, exist_ok=True)
    (anchors / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
    with _database(tmp) as database_url:
        full = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
        full.update({"IDP_ISSUER": f"http://127.0.0.1:{port}", "IDP_KEYS_DIR": str(tmp / "keys"),
                     "IDP_INSTANCE_DIR": str(tmp / "instance"), "IDP_DATABASE_URL": database_url,
                     "IDP_JPKI_TRUST_ANCHORS": str(anchors), "IDP_RATE_LIMIT_PER_MINUTE": "0",
                     "PYTHONUNBUFFERED": "1", **(env or {})})
        log_path = tmp / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve", "--host", "127.0.0.1",
                                        "--port", str(port), "--workers", str(workers)], env=full,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        base_url = full["IDP_ISSUER"]
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("idp serve did not start:\n" + log_path.read_text(errors="replace"))
                try:
                    if requests.get(base_url + "/.well-known/openid-configuration", timeout=2).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            yield base_url
        finally:
            process.send_signal(signal.SIGINT)  # quick shutdown: nothing is in flight any more
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")


@contextlib.contextmanager
def _database(tmp: Path) -> Iterator[str]:
    pg_url = os.environ.get("IDP_TEST_DATABASE_URL")
    if not pg_url:
        yield f"sqlite:///{tmp / 'idp.sqlite3'}"
        return
    import psycopg

    name = f"idp_test_{uuid.uuid4().hex[:12]}"
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
