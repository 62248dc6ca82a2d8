"""A round-robin HTTP load balancer for tests: each request to the next backend in turn.

It forwards every request (method, path, query, headers, body) unchanged apart from the
hop-by-hop headers and answers with the backend's response unfollowed, like a reverse
proxy without sticky sessions; ``X-Served-By`` names the backend port, so a test can
check that a flow really went through every instance.

    with RoundRobin(port, [a.port, b.port]) as balancer: ...   # port: the issuer's
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any, Iterable

import requests
from werkzeug.serving import make_server

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}


class RoundRobin:
    def __init__(self, port: int, backends: Iterable[int]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(self.backends)
        self._lock = threading.Lock()
        self.served: Counter[int] = Counter()
        self.paths: list[tuple[str, int]] = []
        self.session = requests.Session()
        self.server = make_server("127.0.0.1", port, self._app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RoundRobin":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.session.close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self._lock:
            backend = next(self._next)
            self.served[backend] += 1
            self.paths.append((environ.get("PATH_INFO", ""), backend))
        query = environ.get("QUERY_STRING")
        url = f"http://127.0.0.1:{backend}{environ.get('PATH_INFO', '')}" + (f"?{query}" if query else "")
        headers = {key[5:].replace("_", "-"): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP}
        headers["Host"] = environ.get("HTTP_HOST", "")
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        answer = requests.request(environ["REQUEST_METHOD"], url, headers=headers, data=body,
                                  allow_redirects=False, timeout=60)
        out = [(key, value) for key, value in answer.raw.headers.items() if key.lower() not in HOP_BY_HOP]
        out.append(("X-Served-By", str(backend)))
        start_response(f"{answer.status_code} {answer.reason}", out)
        return [answer.content]
