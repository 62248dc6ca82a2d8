"""The load driver's transport (``light_http.py``) against a scripted loopback server: message
framing, keep-alive and its one resend, cookies, the page hook check and the RP's request.
No IdP needed; part of ``make test``."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from light_http import BenchRP, Browser, Connection, CookieJar, JwksCache, page_has_hook  # noqa: E402

from tests.support.rp import RelyingParty  # noqa: E402

Script = Callable[[socket.socket], bool]  # writes a response; False: then close the connection
HEADS: list[str] = []


def answer(*parts: bytes, keep: bool = True) -> Script:
    def script(conn: socket.socket) -> bool:
        for part in parts:
            conn.sendall(part)
            time.sleep(0.005)  # separate segments: the client must reassemble
        return keep

    return script


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, Script]]]:
    """A loopback HTTP server answering each request path with its script (``HEADS``: what came)."""
    scripts: dict[str, Script] = {}
    HEADS.clear()
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                HEADS.append(head.decode("latin-1"))
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                path = head.split(b" ")[1].decode().split("?")[0]
                if not scripts[path](conn):
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", scripts
    listener.close()


def test_framing_and_keep_alive(server: tuple[str, dict[str, Script]]) -> None:
    base, scripts = server
    scripts["/length"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\n", b"x-a: 2\r\n\r\nhello", b" world")
    scripts["/chunked"] = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                                 b"lo\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    scripts["/interim"] = answer(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n")
    scripts["/until-close"] = answer(b"HTTP/1.0 200 OK\r\n\r\nto the end", keep=False)
    scripts["/close"] = answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", keep=False)
    connection = Connection(base, timeout=5)
    response = connection.request("GET", "/length")
    assert (response.status_code, response.content, response.headers["x-a"]) == (200, b"hello world", "1, 2")
    assert connection.request("POST", "/chunked", body=b"{}").content == b"hello world"
    assert connection.request("GET", "/interim").status_code == 204
    assert connection.opened == 1  # one connection kept alive so far
    assert connection.request("GET", "/until-close").content == b"to the end"
    assert connection.request("GET", "/close").content == b"ok"
    assert connection.request("GET", "/length").status_code == 200
    assert (connection.opened, connection.retried) == (3, 0)


def test_stale_connection_is_resent_once_and_only_when_reused(server: tuple[str, dict[str, Script]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base, scripts = server
    scripts["/ok"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    scripts["/then-idle-close"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False)
    scripts["/silence"] = lambda conn: False
    connection = Connection(base, timeout=5)
    connection.request("GET", "/then-idle-close")  # the server closes it afterwards, as at a keep-alive timeout
    time.sleep(0.05)
    assert connection.request("GET", "/ok").content == b"ok"  # seen closed before sending: a new connection
    assert (connection.opened, connection.retried) == (2, 0)
    monkeypatch.setattr(Connection, "_dropped", staticmethod(lambda sock: False))  # the close races the request
    connection.request("GET", "/then-idle-close")
    time.sleep(0.05)
    assert connection.request("GET", "/ok").content == b"ok"
    assert (connection.opened, connection.retried) == (3, 1)
    with pytest.raises(http.client.RemoteDisconnected):  # reused, resent once on a fresh one, which fails too
        connection.request("GET", "/silence")
    assert (connection.opened, connection.retried) == (4, 2)
    with pytest.raises(http.client.RemoteDisconnected):  # a fresh connection: nothing resent
        connection.request("GET", "/silence")
    assert (connection.opened, connection.retried) == (5, 2)


def test_broken_responses_raise(server: tuple[str, dict[str, Script]]) -> None:
    base, scripts = server
    scripts["/short"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", keep=False)
    scripts["/status"] = answer(b"HTTX/1.1 200 OK\r\n\r\n", keep=False)
    scripts["/coding"] = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", keep=False)
    connection = Connection(base, timeout=5)
    with pytest.raises(http.client.IncompleteRead):
        connection.request("GET", "/short")
    with pytest.raises(http.client.BadStatusLine):
        connection.request("GET", "/status")
    with pytest.raises(http.client.HTTPException, match="Transfer-Encoding"):
        connection.request("GET", "/coding")
    assert connection.retried == 0


def test_cookie_jar_follows_rfc_6265() -> None:
    jar = CookieJar("127.0.0.1")
    jar.store([
        "a=1; Path=/; Max-Age=100; HttpOnly; SameSite=Lax",
        "b=2; Expires=Wed, 01 Jan 2031 00:00:00 GMT",  # default path of /login/x: /login
        "c=3; Path=/sub",
        "d=4; Domain=example.com",  # not this host
        "e=5; Secure",  # not over http
        "__Host-f=6; Path=/",  # the prefix needs Secure
        "g=7; Domain=127.0.0.1; Path=/",
        "garbage",
        "m=8; Max-Age=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/",  # Max-Age wins
    ], "/login/x", now=1000.0)
    assert jar.header("/", now=1000.5) == "a=1; g=7; m=8"
    assert jar.header("/sub/page", now=1000.5) == "c=3; a=1; g=7; m=8"  # longest path first
    assert jar.header("/subway", now=1000.5) == "a=1; g=7; m=8"
    assert jar.header("/login", now=1000.5) == "b=2; a=1; g=7; m=8"
    assert jar.header("/", now=1002.0) == "a=1; g=7"  # m expired
    jar.store(["a=; Max-Age=0; Path=/", "g=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/", "c=; Max-Age=0"],
              "/", now=1003.0)
    assert jar.header("/sub/page", now=1003.0) == "c=3"  # c's deletion named another path (the default, /)
    jar.clear()
    assert jar.header("/sub/page") == ""
    secure = CookieJar("idp.example", secure=True)
    secure.store(["__Host-s=1; Secure; Path=/", "__Host-t=2; Secure; Path=/x", "e=5; Secure; Domain=other.example", "h=8; Secure; Domain=.IDP.example"], "/")
    assert secure.header("/") == "__Host-s=1; h=8"


def test_browser_keeps_cookies_and_stays_on_the_idp(server: tuple[str, dict[str, Script]]) -> None:
    base, scripts = server
    scripts["/set"] = answer(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nSet-Cookie: s=1; Path=/\r\n"
                             b"Content-Length: 0\r\n\r\n")
    scripts["/next"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    browser = Browser(base, timeout=5)
    assert browser.get(base + "/set?x=1").headers["Location"] == "/next"
    assert HEADS[-1].startswith("GET /set?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    browser.post_form(base + "/next", [("a", "1 2"), ("b", "&")])
    assert "\r\nCookie: s=1" in HEADS[-1] and "Content-Type: application/x-www-form-urlencoded" in HEADS[-1]
    browser.jar = browser.new_jar()  # another person: no cookies
    browser.post_json(base + "/next", {"txn": "t"})
    assert "Cookie:" not in HEADS[-1] and "Content-Type: application/json" in HEADS[-1]
    assert browser.connection.opened == 1
    with pytest.raises(Exception, match="off the IdP"):
        browser.get("http://localhost:9/callback")


def test_page_has_hook_as_the_html_parser_sees_it() -> None:
    page = ('<html><!-- <button data-action="passkey"> --><script>x = \'<b data-action="passkey">\'</script>'
            '<img alt="1 > 0" data-action=\'qr\'><p data-action="other">passkey</p></html>')
    assert not page_has_hook(page, "action", "passkey")  # only in a comment, a script and a text node
    assert page_has_hook(page, "action", "qr")  # single quotes, '>' inside another attribute value
    assert page_has_hook(page + '<button type="button" data-action="pass&#107;ey" disabled>', "action", "passkey")
    assert page_has_hook(page + "<BUTTON DATA-ACTION=passkey>", "action", "passkey")


def test_bench_rp_sends_what_the_authlib_client_sends() -> None:
    provider = {"issuer": "http://127.0.0.1:1", "authorization_endpoint": "http://127.0.0.1:1/authorize",
                "token_endpoint": "http://127.0.0.1:1/token", "userinfo_endpoint": "http://127.0.0.1:1/userinfo",
                "jwks_uri": "http://127.0.0.1:1/jwks"}
    client = {"client_id": "c:1", "client_secret": "s%2", "redirect_uris": ["http://localhost:9/cb"],
              "rp_category": "transport"}
    rp = BenchRP(RelyingParty(provider, client, scope="openid age"), JwksCache(provider["jwks_uri"], None, 5), 5)
    url = rp.authentication_request()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    state = query.pop("state")
    request = rp._pending[state]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(request.code_verifier.encode()).digest()).rstrip(b"=")
    assert query == {"response_type": "code", "client_id": "c:1", "redirect_uri": "http://localhost:9/cb",
                     "scope": "openid age", "nonce": request.nonce, "code_challenge": challenge.decode(),
                     "code_challenge_method": "S256"}
    # RFC 6749 §2.3.1: id and secret form-urlencoded before base64, as rp.py's authlib hook does
    assert f"Authorization: Basic {base64.b64encode(b'c%3A1:s%252').decode()}\r\n" in rp._token_headers
    callback = f"http://localhost:9/cb?code=abc&state={state}&iss=http%3A%2F%2F127.0.0.1%3A1"
    assert rp.parse_callback(callback) == (request, {"code": "abc", "state": state, "iss": provider["issuer"]})
