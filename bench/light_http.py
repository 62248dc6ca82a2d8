"""The load driver's transport: keep-alive HTTP/1.1 connections, cookie jars and the RP's back channel.

Why not requests and authlib: ``login_flow.py`` runs on the same two cores as the server it
measures. Through requests (session merging, proxy lookups in the environment, urllib3's
connection pool, ``email``-based header parsing) and a fresh authlib ``OAuth2Session`` per
token call, the driver cost about 10 ms of CPU per login, a third of the machine, which
capped the throughput any server could show. Here each request costs tens of
microseconds: a request is written in one ``sendall`` and its response read with as few
``recv`` calls as its size needs, on a connection each simulated browser or RP keeps open.

What is *not* lighter: what is sent and what is checked. The browser keeps a cookie jar per
person (RFC 6265 §5.2–5.4), the RP sends the same authentication request (PKCE S256,
``state``, ``nonce``) and token request (``client_secret_basic``, ``code_verifier``) as
``tests/support/rp.py``'s authlib client, and every check of the callback and the ID token
is ``RelyingParty``'s own (``parse_callback``, ``_token_result`` → ``validate_id_token``
with jwcrypto), inherited unchanged by :class:`BenchRP`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookiejar import http2time
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jwcrypto.jwk import JWKSet

from tests.support.http import body_of
from tests.support.rp import AuthorizationRequest, BrowserFlowError, RelyingParty, RPError, parse_page

USER_AGENT = "idp-bench/1"
MAX_HEAD = 64 * 1024
NO_BODY_STATUS = frozenset({204, 304})


# responses ------------------------------------------------------------------------------
class Headers(dict):
    """A response's header fields by lower-cased name (RFC 9110 §5.1: names are case-insensitive),
    repeated fields joined with ", " (§5.3), except ``Set-Cookie``, which cannot be joined
    (RFC 6265 §3) and is kept apart in :attr:`cookies`. ``version``: the status line's."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        self.cookies: list[str] = []

    def add(self, name: str, value: str, folded: bool = False) -> None:
        """One field line; ``folded``: an obsolete continuation line of the previous field."""
        key = name.lower()
        if key == "set-cookie":
            if folded:
                self.cookies[-1] += " " + value
            else:
                self.cookies.append(value)
        else:
            earlier = dict.get(self, key)
            dict.__setitem__(self, key, value if earlier is None else earlier + (" " if folded else ", ") + value)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@dataclass
class Response:
    """What the driver needs of a response: ``status_code``, ``headers``, ``text`` and ``json()``
    as requests names them, so ``tests/support``'s error classes and ``body_of`` take it."""

    status_code: int
    headers: Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")  # the IdP serves UTF-8 only

    def json(self) -> Any:
        return json.loads(self.content)


# connections ----------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection (RFC 9112) to one ``http://`` origin on loopback.

    Opened on first use and again after the server closes it. A request on a *reused*
    connection that meets a closed connection before any byte of the response arrives
    (the server's keep-alive timer fired as the request left: gunicorn closes connections
    idle for 2 s) is sent once more on a new connection, as browsers do; nothing else is
    retried. ``opened`` and ``retried`` count both, for the report.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url}: the driver speaks plain HTTP to a loopback server only")
        self.address = (parts.hostname, parts.port or 80)
        self.authority = parts.netloc
        self.timeout = timeout
        self.opened = 0
        self.retried = 0
        self._sock: socket.socket | None = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, method: str, target: str, headers: str = "", body: bytes | None = None) -> Response:
        """Send one request (``headers``: ready ``Name: value\\r\\n`` lines) and read its response."""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.authority}\r\nUser-Agent: {USER_AGENT}\r\n{headers}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode("latin-1") + (body or b"")
        for attempt in (1, 2):
            sock = self._sock
            reused = sock is not None and not self._dropped(sock)
            if not reused:
                self.close()
                sock = self._connect()
            try:
                sock.sendall(message)
                status, fields, rest = self._read_head(sock)
            except (ConnectionResetError, BrokenPipeError):  # before any byte of a response (see _read_head)
                self.close()
                if reused and attempt == 1:
                    self.retried += 1
                    continue
                raise
            except BaseException:
                self.close()
                raise
            try:
                content, keep = self._read_body(sock, method, status, fields, rest)
            except BaseException:
                self.close()
                raise
            if not keep:
                self.close()
            return Response(status, fields, content)
        raise AssertionError("unreachable")

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.opened += 1
        return sock

    @staticmethod
    def _dropped(sock: socket.socket) -> bool:
        """An idle keep-alive connection is readable only when the server closed it (or broke the
        protocol by sending unasked bytes): either way it is not reused."""
        return bool(select.select([sock], [], [], 0)[0])

    @staticmethod
    def _read_head(sock: socket.socket) -> tuple[int, Headers, bytes]:
        """Status line and header section (RFC 9112 §2.1, §4, §5); 1xx interim responses skipped.

        Only a connection closed or reset before the first byte raises ``ConnectionResetError``
        (``RemoteDisconnected``); once bytes came, a broken response is ``IncompleteRead``."""
        buffer = b""
        received = False
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEAD:
                    raise http.client.LineTooLong("response header section")
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    if received:
                        raise http.client.IncompleteRead(buffer) from None
                    raise
                if not chunk:
                    if received:
                        raise http.client.IncompleteRead(buffer)
                    raise http.client.RemoteDisconnected("the server closed the connection without a response")
                received = True
                buffer += chunk
                end = buffer.find(b"\r\n\r\n")
            lines = buffer[:end].decode("latin-1").split("\r\n")
            rest = buffer[end + 4:]
            version, _, remainder = lines[0].partition(" ")
            code = remainder[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit() or remainder[3:4] not in ("", " "):
                raise http.client.BadStatusLine(lines[0])
            status = int(code)
            if 100 <= status < 200 and status != 101:
                buffer = rest
                continue
            headers = Headers(version)
            name = ""
            for line in lines[1:]:
                if line[:1] in (" ", "\t") and name:  # obsolete line folding (RFC 9112 §5.2): one space
                    headers.add(name, line.strip(), folded=True)
                    continue
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.strip():
                    raise http.client.HTTPException(f"malformed header line {line!r}")
                headers.add(name, value.strip())
            return status, headers, rest

    @staticmethod
    def _read_body(
        sock: socket.socket, method: str, status: int, headers: Headers, rest: bytes
    ) -> tuple[bytes, bool]:
        """The message body as RFC 9112 §6.3 frames it, and whether the connection stays open."""
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "close" not in tokens if headers.version == "HTTP/1.1" else "keep-alive" in tokens
        if method == "HEAD" or status in NO_BODY_STATUS:
            content = b""
        elif "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings != ["chunked"]:  # we ask for no transfer coding but chunked, which HTTP/1.1 implies
                raise http.client.HTTPException(f"unsupported Transfer-Encoding {headers['transfer-encoding']!r}")
            content, rest = _read_chunked(sock, rest)
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            length = values.pop()
            if values or not length.isdigit():
                raise http.client.HTTPException(f"bad Content-Length {headers['content-length']!r}")
            content, rest = _read_exactly(sock, rest, int(length))
        else:  # delimited by the server closing the connection
            parts = [rest]
            while chunk := sock.recv(65536):
                parts.append(chunk)
            return b"".join(parts), False
        if rest:
            raise http.client.HTTPException("bytes after the end of the response")
        return content, keep


def _read_exactly(sock: socket.socket, buffer: bytes, length: int) -> tuple[bytes, bytes]:
    """``length`` bytes (from ``buffer``, then the socket) and what came after them."""
    if len(buffer) >= length:
        return buffer[:length], buffer[length:]
    parts = [buffer]
    missing = length - len(buffer)
    while missing > 0:
        chunk = sock.recv(min(missing, 1 << 20))
        if not chunk:
            raise http.client.IncompleteRead(b"".join(parts), missing)
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts), b""


def _read_line(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    while (end := buffer.find(b"\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise http.client.LineTooLong("chunk line")
        chunk = sock.recv(65536)
        if not chunk:
            raise http.client.IncompleteRead(buffer)
        buffer += chunk
    return buffer[:end], buffer[end + 2:]


def _read_chunked(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """The chunked transfer coding (RFC 9112 §7.1): chunks until the last, then trailers (ignored)."""
    parts = []
    while True:
        line, buffer = _read_line(sock, buffer)
        size = line.split(b";", 1)[0].strip()
        try:
            length = int(size, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size!r}") from None
        if length == 0:
            while True:
                line, buffer = _read_line(sock, buffer)
                if not line:
                    return b"".join(parts), buffer
        data, buffer = _read_exactly(sock, buffer, length + 2)
        if data[-2:] != b"\r\n":
            raise http.client.HTTPException("chunk not followed by CRLF")
        parts.append(data[:-2])


# cookies ---------------------------------------------------------------------------------
_DELTA_SECONDS = re.compile(r"-?[0-9]+")
@dataclass
class Cookie:
    value: str
    path: str
    expires: float | None  # epoch seconds; None: a session cookie


class CookieJar:
    """A browser's cookies for one host (RFC 6265): stored from ``Set-Cookie`` as §5.2–5.3 say
    (``Max-Age`` over ``Expires``, deletion by a past expiry, ``Path`` with its default,
    ``Domain`` only if it matches the host, ``Secure`` and the ``__Secure-``/``__Host-``
    prefixes only over https) and sent back as §5.4 says (path match, longest path first).
    ``SameSite`` needs no check: every request of the flow is same-site or a top-level GET."""

    def __init__(self, host: str, secure: bool = False) -> None:
        self.host = host.lower()
        self.secure = secure
        try:
            ip_address(self.host)
            self._ip = True
        except ValueError:
            self._ip = False
        self._cookies: dict[tuple[str, str], Cookie] = {}

    def clear(self) -> None:
        self._cookies.clear()

    def __len__(self) -> int:
        return len(self._cookies)

    def store(self, set_cookies: Iterable[str], request_path: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for header in set_cookies:
            self._store_one(header, request_path, now)

    def _store_one(self, header: str, request_path: str, now: float) -> None:
        pair, *attributes = header.split(";")
        name, equals, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:  # §5.2 steps 2–3
            return
        path, domain, expires, max_age, secure = None, "", "", None, False
        for attribute in attributes:
            key, _, argument = attribute.partition("=")
            key, argument = key.strip().lower(), argument.strip()
            if key == "expires":
                expires = argument
            elif key == "max-age" and _DELTA_SECONDS.fullmatch(argument):  # §5.2.2
                max_age = int(argument)
            elif key == "domain" and argument:
                domain = argument.lstrip(".").lower()
            elif key == "path":
                path = argument if argument.startswith("/") else None
            elif key == "secure":
                secure = True
        if domain and domain != self.host and (self._ip or not self.host.endswith("." + domain)):
            return  # §5.3 step 6: not for this host
        if secure and not self.secure:
            return  # RFC 6265bis §5.7 step 8: only a secure channel sets a Secure cookie
        if name.startswith(("__Secure-", "__Host-")) and not secure:
            return
        if name.startswith("__Host-") and (domain or path != "/"):
            return
        path = path or _default_path(request_path)
        if max_age is not None:  # §5.3 step 3: Max-Age wins over Expires
            expiry: float | None = now + max_age
        else:
            expiry = http2time(expires) if expires else None  # §5.2.1: an unparsable date is ignored
        if expiry is not None and expiry <= now:
            self._cookies.pop((name, path), None)
        else:
            self._cookies[(name, path)] = Cookie(value, path, expiry)

    def header(self, request_path: str, now: float | None = None) -> str:
        """The ``Cookie`` header value for a request to ``request_path`` ("" when none applies)."""
        if not self._cookies:
            return ""
        now = time.time() if now is None else now
        chosen = []
        for key, cookie in list(self._cookies.items()):
            if cookie.expires is not None and cookie.expires <= now:
                del self._cookies[key]
            elif _path_match(request_path, cookie.path):
                chosen.append((key[0], cookie))
        chosen.sort(key=lambda item: -len(item[1].path))
        return "; ".join(f"{name}={cookie.value}" for name, cookie in chosen)


def _default_path(request_path: str) -> str:
    """RFC 6265 §5.1.4's default-path of a request URI's path."""
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rindex("/")]


def _path_match(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 §5.1.4 path-match."""
    return request_path == cookie_path or (
        request_path.startswith(cookie_path) and (cookie_path.endswith("/") or request_path[len(cookie_path)] == "/")
    )


# the browser -----------------------------------------------------------------------------
HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class Browser:
    """A browser talking to the IdP only: one keep-alive connection, and the cookie jar of the
    person it plays at the moment (``jar``, swapped per flow by the caller). Redirects are
    returned, never followed: the flow decides where to go."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.hostname or ""
        self.connection = Connection(base_url, timeout)
        self.jar = CookieJar(self.host)

    def new_jar(self) -> CookieJar:
        return CookieJar(self.host)

    def close(self) -> None:
        self.connection.close()

    def get(self, url: str) -> Response:
        return self._send("GET", url, f"Accept: {HTML_ACCEPT}\r\n", None)

    def post_form(self, url: str, pairs: list[tuple[str, str]]) -> Response:
        """A form submission (HTML's application/x-www-form-urlencoded serialisation)."""
        return self._send("POST", url, f"Accept: {HTML_ACCEPT}\r\nContent-Type: application/x-www-form-urlencoded\r\n",
                          urlencode(pairs).encode("ascii"))

    def post_json(self, url: str, body: Any) -> Response:
        """What the page's script sends with ``fetch`` (same origin, so with the cookies)."""
        return self._send("POST", url, "Accept: application/json\r\nContent-Type: application/json\r\n",
                          json.dumps(body).encode())

    def _send(self, method: str, url: str, headers: str, body: bytes | None) -> Response:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            raise BrowserFlowError(f"the browser was sent off the IdP to {url}")
        path = parts.path or "/"
        cookie = self.jar.header(path)
        if cookie:
            headers += f"Cookie: {cookie}\r\n"
        response = self.connection.request(method, f"{path}?{parts.query}" if parts.query else path, headers, body)
        if response.headers.cookies:
            self.jar.store(response.headers.cookies, path)
        return response


# the relying party's back channel --------------------------------------------------------------
class JwksCache:
    """The IdP's JWKS for every thread's RPs: fetched once per run (during set-up), fetched
    again when an ID token names a ``kid`` it lacks (``RelyingParty.validate_id_token`` asks
    for ``refresh`` then; key rotation). Refetches are serialised."""

    def __init__(self, jwks_uri: str, jwks: JWKSet | None, timeout: float) -> None:
        self.jwks_uri = jwks_uri
        self.timeout = timeout
        self.fetches = 0
        self._jwks = jwks
        self._lock = threading.Lock()

    def get(self, refresh: bool = False) -> JWKSet:
        if self._jwks is not None and not refresh:
            return self._jwks
        with self._lock:
            connection = Connection(self.jwks_uri, self.timeout)
            try:
                parts = urlsplit(self.jwks_uri)
                response = connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                                              "Accept: application/json\r\n")
            finally:
                connection.close()
            if response.status_code != 200:
                raise RPError(response.status_code, body_of(response), response)
            self._jwks = JWKSet.from_json(response.content)
            self.fetches += 1
            return self._jwks


class BenchRP(RelyingParty):
    """One client thread's instance of a registered RP: the checks of ``tests/support/rp.py``'s
    :class:`RelyingParty` (inherited: ``parse_callback``, ``_token_result``,
    ``validate_id_token``), the requests of its authlib client, sent over this RP's own
    keep-alive connection (an RP's back channel is not the browser's)."""

    def __init__(self, registered: RelyingParty, jwks: JwksCache, timeout: float) -> None:
        super().__init__(registered.provider, registered.client, scope=registered.scope, timeout=timeout)
        if getattr(self, "dpop", None) is not None or self._requires_par():
            raise ValueError("the bench RPs send neither DPoP proofs nor pushed requests")
        self.session.close()  # RelyingParty's requests session: never used here
        self.jwks_cache = jwks
        self.connection = Connection(self.provider["token_endpoint"], timeout)
        self._token_target = urlsplit(self.provider["token_endpoint"]).path
        self._userinfo_target = urlsplit(self.provider["userinfo_endpoint"]).path
        if urlsplit(self.provider["userinfo_endpoint"]).netloc != self.connection.authority:
            raise ValueError("token and userinfo endpoints on different hosts")
        # RFC 6749 §2.3.1: client id and secret form-urlencoded, then base64 (as rp.py's authlib hook)
        basic = f"{quote(self.client_id, safe='')}:{quote(self.client_secret or '', safe='')}"
        self._token_headers = (
            f"Authorization: Basic {base64.b64encode(basic.encode()).decode()}\r\nAccept: application/json\r\n"
            "Content-Type: application/x-www-form-urlencoded;charset=UTF-8\r\n"
        )

    def close(self) -> None:
        self.connection.close()

    def jwks(self, *, refresh: bool = False) -> JWKSet:
        return self.jwks_cache.get(refresh)

    def authentication_request(self) -> str:
        """The URL ``authorization_url()`` builds with authlib, without it: OIDC Core §3.1.2.1
        code flow with ``state``, ``nonce`` and PKCE S256 (RFC 7636 §4.1–4.3), remembered by
        ``state`` for ``parse_callback``."""
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
        query = urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
            "scope": self.scope, "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256",
        }, quote_via=quote)
        endpoint = self.provider["authorization_endpoint"]
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        self._pending[state] = AuthorizationRequest(url, state, nonce, verifier, self.redirect_uri, self.scope)
        return url

    def fetch_token(self, code: str, request: AuthorizationRequest) -> dict:
        """The token request (RFC 6749 §4.1.3 with RFC 7636 §4.5's ``code_verifier``); an error
        answer (RFC 6749 §5.2), whatever its status, raises :class:`RPError`."""
        body = urlencode([("grant_type", "authorization_code"), ("redirect_uri", request.redirect_uri),
                          ("code", code), ("code_verifier", request.code_verifier or "")]).encode("ascii")
        response = self.connection.request("POST", self._token_target, self._token_headers, body)
        answer = body_of(response)
        if response.status_code != 200 or not isinstance(answer, dict) or "error" in answer:
            raise RPError(response.status_code, answer, response)
        return answer

    def fetch_userinfo(self, access_token: str) -> dict:
        """``GET /userinfo`` with the bearer token (OIDC Core §5.3.1, RFC 6750 §2.1); the bench
        RPs register no signed answer, so anything but a JSON object is an error."""
        response = self.connection.request(
            "GET", self._userinfo_target, f"Authorization: Bearer {access_token}\r\nAccept: application/json\r\n")
        answer = body_of(response)
        if response.status_code != 200 or not isinstance(answer, dict) \
                or not response.headers.get("Content-Type", "").startswith("application/json"):
            raise RPError(response.status_code, answer, response)
        return answer


def page_has_hook(html: str, attribute: str, value: str) -> bool:
    """Whether the page has an element with ``data-<attribute>="<value>"`` (the stable hooks a
    browser driver relies on), as ``parse_page(html).hook(attribute, value)`` finds it, at a
    fraction of the cost: comments and script/style contents are cut out, and only the start
    tags that name the attribute (in any case) and the value (as written, or with character
    references) go through ``tests/support``'s HTML parser."""
    marker = f"data-{attribute}"
    if marker not in html and marker not in html.lower():
        return False
    return any(marker in tag.lower() and (value in tag or "&" in tag)
               and parse_page(tag).hook(attribute, value) is not None
               for tag in _START_TAG.findall(_HIDDEN.sub(" ", html)))


_HIDDEN = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>", re.S | re.I)
_START_TAG = re.compile(r"""<[a-zA-Z][^\s/>]*(?:[^>"']|"[^"]*"|'[^']*')*>""")
