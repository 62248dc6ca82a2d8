"""The outbound-fetch boundary (idp/clients/fetch.py): what the IdP fetches for clients.

A loopback listener proves that, in production mode, no spelling of a loopback or
private address leads to a connection, and that the client always reads the same text.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
import requests

from idp.clients import fetch
from tests.conftest import RunningIdP, start_idp
from tests.support.listeners import ConnectionRecorder, TricklingServer
from tests.support.server import serve_idp

REGISTRATION_TOKEN = "t" * 40
# Every spelling of loopback from the issue, plus private, link-local, unique-local,
# shared, multicast, unspecified, mapped and NAT64 addresses.
SPELLINGS = ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "2130706433", "0x7f000001", "0177.0.0.1",
             "127.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]", "10.0.0.1", "192.168.1.1",
             "172.16.0.1", "169.254.169.254", "100.64.0.1", "[fe80::1]", "[fc00::1]", "224.0.0.1", "[::]",
             "app.localhost", "240.0.0.1", "[2002:7f00:1::]")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any) -> Iterator[RunningIdP]:
    """An IdP with an https issuer, served over loopback http for the test (as behind a proxy)."""
    yield from start_idp(tmp_path_factory.mktemp("prod"), jpki_ca,
                         env={"IDP_ISSUER": "https://idp.example", "IDP_REGISTRATION_TOKEN": REGISTRATION_TOKEN,
                              "IDP_ALLOW_HTTP_LOOPBACK": "0", "IDP_PROXY_HOPS": "1"})


def _register(idp: RunningIdP, **metadata: Any) -> requests.Response:
    body = {"rp_category": "municipal", "redirect_uris": ["https://rp.example/cb"], **metadata}
    return requests.post(idp.base_url + "/register", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}",
                                  "X-Forwarded-Proto": "https", "X-Forwarded-Host": "idp.example"})


@pytest.mark.parametrize("field", ["sector_identifier_uri", "jwks_uri", "request_uris", "backchannel_logout_uri",
                                   "logo_uri"])
def test_production_registration_refuses_every_internal_spelling_without_connecting(
        production: RunningIdP, field: str) -> None:
    texts = set()
    with ConnectionRecorder() as listener:
        for spelling in SPELLINGS:
            url = f"https://{spelling}:{listener.port}/doc"
            value: Any = [url] if field == "request_uris" else url
            response = _register(production, **{field: value})
            assert response.status_code == 400, (spelling, response.text)
            assert response.json()["error"] == "invalid_client_metadata"
            texts.add(response.json()["error_description"])
    assert listener.accepted == [], "the IdP connected to an internal address"
    assert len(texts) == 1, texts
    assert spelling not in texts.pop()


def test_a_name_resolving_to_an_internal_address_is_refused_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with ConnectionRecorder() as listener:
        monkeypatch.setattr(fetch.socket, "getaddrinfo", resolver)
        with pytest.raises(fetch.FetchError) as refused:
            fetch.fetch(f"https://rebind.example:{listener.port}/jwks", allow_http_loopback=False)
    assert calls == ["rebind.example"]
    assert listener.accepted == []
    assert str(refused.value) == "could not be fetched"
    assert "127.0.0.1" in refused.value.detail


def test_connects_to_the_checked_address_with_one_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host name is looked up once; the connection goes to that address, named by host."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]])
    lookups: list[str] = []

    def resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return next(answers)  # a second lookup would raise StopIteration

    monkeypatch.setattr(fetch.socket, "getaddrinfo", resolver)
    try:
        assert fetch.fetch(f"http://localhost:{port}/x", allow_http_loopback=True).json() == []
    finally:
        server.shutdown()
        server.server_close()
    assert lookups == ["localhost"] and seen == [f"localhost:{port}"]


def test_development_still_allows_loopback_but_not_private_addresses() -> None:
    fetch.check_url("http://127.0.0.1:8000/x", allow_http_loopback=True)
    fetch.check_url("http://localhost:8000/x", allow_http_loopback=True)
    for url in ("http://10.0.0.1/x", "http://rp.example/x", "https://169.254.169.254/x",
                "https://[::ffff:127.0.0.1]/x"):
        with pytest.raises(fetch.FetchError):
            fetch.check_url(url, allow_http_loopback=True)


class _Answers(BaseHTTPRequestHandler):
    """Canned answers by path: a redirect, an oversized body, cacheable and uncacheable JSON."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802
        _Answers.hits[self.path] = _Answers.hits.get(self.path, 0) + 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"[" + b"1," * 40000 + b"1]" if self.path == "/big" else b'{"keys": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path != "/big":
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=60" if self.path == "/cacheable" else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def answers() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_redirects_are_not_followed(answers: str) -> None:
    with pytest.raises(fetch.FetchError) as refused:
        fetch.fetch(answers + "/redirect", allow_http_loopback=True)
    assert "302" in refused.value.detail and str(refused.value) == "could not be fetched"


def test_size_cap_without_content_length(answers: str) -> None:
    with pytest.raises(fetch.FetchError) as refused:
        fetch.fetch(answers + "/big", allow_http_loopback=True)
    assert "bytes" in refused.value.detail


def test_cache_honours_cache_control(answers: str) -> None:
    fetch.clear_cache()
    for _ in range(3):
        fetch.fetch_cached(answers + "/cacheable", allow_http_loopback=True)
        fetch.fetch_cached(answers + "/uncacheable", allow_http_loopback=True)
    assert _Answers.hits["/cacheable"] == 1
    assert _Answers.hits["/uncacheable"] == 3
    fetch.fetch_cached(answers + "/cacheable", allow_http_loopback=True, refresh_after=0)  # a kid miss
    assert _Answers.hits["/cacheable"] == 2


def test_total_deadline_against_a_trickling_server() -> None:
    with TricklingServer(body=b"x" * 200, interval=0.2) as slow:
        started = time.monotonic()
        with pytest.raises(fetch.FetchError) as refused:
            fetch.fetch(slow.url(), allow_http_loopback=True, deadline=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert "within" in refused.value.detail


def test_a_full_pool_refuses_at_once() -> None:
    with TricklingServer(interval=0.3) as slow:
        threads = [threading.Thread(target=lambda: pytest.raises(fetch.FetchError, fetch.fetch, slow.url(),
                                                                 allow_http_loopback=True, deadline=1.5))
                   for _ in range(fetch.CONCURRENT_FETCHES)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(fetch.FetchError) as refused:
            fetch.fetch(slow.url(), allow_http_loopback=True)
        assert time.monotonic() - started < 0.2
        assert "in flight" in refused.value.detail
        for thread in threads:
            thread.join()


def test_discovery_answers_while_ten_authorize_requests_wait_on_a_trickling_request_uri(
        tmp_path: Any, jpki_ca: Any) -> None:
    """RFC 9101 §10.4.1 on a real 2-worker ``idp serve``: slow request_uri hosts hold no worker."""
    with TricklingServer(interval=2.0) as slow, serve_idp(tmp_path, jpki_ca) as server:
        base_url = server.base_url
        client = requests.post(base_url + "/register", timeout=10, json={
            "rp_category": "municipal", "redirect_uris": ["http://127.0.0.1:9/cb"],
            "request_uris": [slow.url()], "token_endpoint_auth_method": "none"}).json()
        query = {"client_id": client["client_id"], "request_uri": slow.url()}
        statuses: list[int] = []

        def authorize() -> None:
            response = requests.get(base_url + "/authorize", params=query, timeout=30, allow_redirects=False)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=authorize) for _ in range(10)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        slowest = 0.0
        while any(thread.is_alive() for thread in threads):
            started = time.monotonic()
            assert requests.get(base_url + "/.well-known/openid-configuration", timeout=5).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        for thread in threads:
            thread.join()
        assert "Traceback" not in server.log()
    assert slowest < 1.0, f"discovery took {slowest:.2f} s"
    assert len(statuses) == 10 and all(status < 500 for status in statuses), statuses
