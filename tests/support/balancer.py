"""A round-robin HTTP load balancer for tests: each request to the next backend in turn.

It forwards every request (method, path, query, headers, body) unchanged apart from the
hop-by-hop headers and answers with the backend's response unfollowed, like a reverse
proxy without sticky sessions; ``X-Served-By`` names the backend port, so a test can
check that a flow really went through every instance.

    with RoundRobin(port, [a.port, b.port]) as balancer: ...   # port: the issuer's

or, for two instances of one deployment (one database, one Redis) behind it::

    with two_instances(tmp, jpki_ca) as deployment: deployment.front.url("/token") ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Iterable

import requests
from werkzeug.serving import make_server

from idp.proofing.demo_card import TestJpkiCA
from tests.support.server import ServedIdP, free_port, serve_idp

REDIS_URL = "redis://127.0.0.1:6379/7"

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


def redis_url() -> str | None:
    """The local test Redis (database 7) if it answers, else None."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return REDIS_URL
    except OSError:
        return None


@dataclasses.dataclass
class Deployment:
    front: ServedIdP  # the balancer's URL, the instances' settings
    instances: list[ServedIdP]
    balancer: RoundRobin
    redis: str | None

    def served_by(self, since: int) -> set[int]:
        return {backend for _, backend in self.balancer.paths[since:]}


@contextlib.contextmanager
def two_instances(tmp: Path, jpki_ca: TestJpkiCA, *, env: Mapping[str, Any] | None = None) -> Iterator[Deployment]:
    """Two ``idp serve`` instances of one deployment (one database, keys folder and, when it
    answers, one Redis) behind a :class:`RoundRobin` whose URL is the issuer: consecutive
    requests, parallel ones included, alternate between the instances."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    redis = redis_url()
    full = {**(env or {}), **({"IDP_REDIS_URL": redis} if redis else {})}
    with serve_idp(tmp / "a", jpki_ca, issuer=issuer, env=full) as a, \
            serve_idp(tmp / "b", jpki_ca, issuer=issuer, env=full, share=a) as b, \
            RoundRobin(port, [a.port, b.port]) as balancer:
        yield Deployment(dataclasses.replace(a, base_url=issuer, port=port), [a, b], balancer, redis)
