"""A tiny HTTP host on 127.0.0.1 that plays the relying party's web server in tests.

The IdP fetches some client metadata by URL (`sector_identifier_uri`, `jwks_uri`) and
pushes back-channel logout tokens to the RP, so tests need a real socket the IdP can
reach. This serves in-memory documents at chosen paths and records every request
body it receives; it uses only the standard library so it starts in milliseconds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Document:
    """What the host answers at one path."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200


@dataclass(frozen=True)
class Received:
    """One request the host received (GETs too: a test may check the IdP fetched a document)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def value(self, name: str) -> str | None:
        """The first form field ``name`` (e.g. ``logout_token``), or None."""
        values = self.form.get(name)
        return values[0] if values else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._serve(include_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(include_body=False)

    def do_POST(self) -> None:  # noqa: N802
        self._record()

    def do_PUT(self) -> None:  # noqa: N802
        self._record()

    def do_DELETE(self) -> None:  # noqa: N802
        self._record()

    def _serve(self, *, include_body: bool) -> None:
        parts = urlsplit(self.path)
        self.server.host.record(self._received(parts, b""))
        document = self.server.host.document(parts.path)
        if document is None:
            document = Document(b'{"error":"not_found"}', status=404)
        self._answer(document, include_body=include_body)

    def _record(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.host.record(self._received(parts, body))
        answer = self.server.host.document(parts.path, method=self.command)
        self._answer(answer or Document(b"", content_type="text/plain"), include_body=True)

    def _received(self, parts: Any, body: bytes) -> Received:
        content_type = self.headers.get("Content-Type", "")
        form = {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return Received(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k: v for k, v in self.headers.items()},
            body=body,
            form=form,
        )

    def _answer(self, document: Document, *, include_body: bool) -> None:
        self.send_response(document.status)
        self.send_header("Content-Type", document.content_type)
        self.send_header("Content-Length", str(len(document.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if include_body:
            self.wfile.write(document.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the per-request stderr line: test output should stay readable."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: RpHost) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.host = host


class RpHost:
    """Serve JSON documents at paths on an ephemeral 127.0.0.1 port; record what arrives.

    Use as a context manager::

        with RpHost() as host:
            host.put("/sector.json", ["http://127.0.0.1:9/cb"])
            RelyingParty.register(..., sector_identifier_uri=host.url("/sector.json"))
            ...
            token = host.wait_for("/backchannel")[0].value("logout_token")
    """

    def __init__(self) -> None:
        self._documents: dict[tuple[str, str], Document] = {}
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------
    def start(self) -> RpHost:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="rp-host", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RpHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses -----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("RpHost is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this host (path must start with '/')."""
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return self.base_url + path

    # documents -----------------------------------------------------------------
    def put(
        self,
        path: str,
        document: Any,
        *,
        content_type: str = "application/json",
        status: int = 200,
        method: str = "GET",
    ) -> str:
        """Serve ``document`` at ``path`` and return its URL.

        JSON-able values are serialized; ``bytes``/``str`` are sent as they are (e.g. a
        deliberately malformed sector document). ``method="POST"`` sets the answer to
        POSTs at that path instead (they are recorded either way; the default answer
        is an empty 200).
        """
        if isinstance(document, bytes):
            body = document
        elif isinstance(document, str):
            body = document.encode()
        else:
            body = json.dumps(document).encode()
        with self._changed:
            self._documents[(method.upper(), path)] = Document(body, content_type, status)
        return self.url(path) if self._server is not None else path

    def remove(self, path: str, *, method: str = "GET") -> None:
        with self._changed:
            self._documents.pop((method.upper(), path), None)

    def document(self, path: str, *, method: str = "GET") -> Document | None:
        with self._changed:
            return self._documents.get((method.upper(), path))

    # recording -----------------------------------------------------------------
    def record(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    def received(self, path: str | None = None, *, method: str | None = "POST") -> list[Received]:
        """Requests received so far at ``path`` (all paths if None), oldest first.

        GETs and HEADs are recorded too: ``received("/sector.json", method="GET")`` shows
        whether the IdP fetched the document (``method=None`` for every method).
        """
        with self._changed:
            return [
                r
                for r in self._received
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def wait_for(
        self, path: str, *, count: int = 1, timeout: float = 5.0, method: str | None = "POST"
    ) -> list[Received]:
        """Block until ``count`` requests reached ``path``: back-channel calls are asynchronous."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    r
                    for r in self._received
                    if r.path == path and (method is None or r.method == method)
                ]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def clear(self) -> None:
        with self._changed:
            self._received.clear()
