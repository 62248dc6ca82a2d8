"""Every outbound HTTP request the IdP makes on a client's behalf goes through here.

``sector_identifier_uri`` (OIDC Registration §5), ``jwks_uri`` (OIDC Core §10.1.1),
``request_uri`` (OIDC Core §6.2, RFC 9101 §5.2) and ``backchannel_logout_uri``
(Back-Channel Logout 1.0 §2.5) are URLs an RP chooses. Fetched naively they make the IdP
a proxy into its own network and a lever on its workers (RFC 9101 §10.4.1, RFC 7591 §5).
So, for every fetch:

- https only; plain http only to a loopback host when the deployment allows it
  (development and tests, ``IDP_ALLOW_HTTP_LOOPBACK``);
- the host is resolved once and every address must be public: loopback, private,
  link-local, unique-local, shared, multicast, unspecified, reserved, IPv4-mapped,
  IPv4-translated (NAT64), 6to4 and Teredo addresses are refused whatever their spelling
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]`` all
  resolve to 127.0.0.1 and are checked as such, by the standard library's ``ipaddress``);
- the connection goes to the address that was checked (no second DNS lookup that could
  answer differently), while TLS still verifies the certificate against the host name;
- no redirects; a total deadline per fetch (a watchdog closes the socket, so a server
  trickling one byte at a time cannot hold it longer) and a size cap;
- at most ``CONCURRENT_FETCHES`` fetches per process wait on remote servers at once; one
  more is refused at once rather than queued, so hostile hosts never hold every worker;
- the caller gets one generic error; what went wrong is logged.

``fetch_cached`` keeps successful GETs for a short time by URL (honouring
``Cache-Control``), so an RP's ``jwks_uri`` or ``request_uri`` is not fetched on every
request.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import SplitResult, urldefrag, urlsplit

import certifi

from idp import bounded_json
from idp.ops import metrics

DEADLINE_SECONDS = 3.0
MAX_BYTES = 64 * 1024
CONCURRENT_FETCHES = 2
CACHE_SECONDS = 60
MAX_CACHE_SECONDS = 300
CACHE_ENTRIES = 256
USER_AGENT = "jp-digital-id-idp"

# Prefixes that embed or translate an IPv4 address, or are otherwise not a public host,
# that ``ipaddress.is_global`` does not refuse on every Python version.
NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "64:ff9b::/96",    # NAT64 well-known prefix (RFC 6052)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "2002::/16",       # 6to4 (RFC 3056)
    "2001::/32",       # Teredo (RFC 4380)
    "100.64.0.0/10",   # shared address space, carrier-grade NAT (RFC 6598)
))

log = logging.getLogger("idp.fetch")
_slots = threading.BoundedSemaphore(CONCURRENT_FETCHES)


class FetchError(ValueError):
    """A URL that may not be fetched or did not answer usefully.

    ``str()`` is the same short text whatever happened, for the client; ``detail`` says
    what happened, for the log only (an error naming the exception or the port's answer
    would make the IdP a port scanner).
    """

    def __init__(self, detail: str, reason: str = "refused") -> None:
        super().__init__("could not be fetched")
        self.detail = detail
        self.reason = reason  # a bounded label for metrics: refused, busy, status, size, deadline, network


@dataclass(frozen=True)
class Fetched:
    """A 2xx answer: its status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return bounded_json.loads(self.body)
        except ValueError:
            raise FetchError("the body is not JSON", "status") from None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally reachable unicast address, in none of the embedding prefixes."""
    if isinstance(address, ipaddress.IPv6Address) and (address.ipv4_mapped or address.sixtofour
                                                        or address.teredo):
        return False
    if address.is_multicast or not address.is_global:
        return False
    return not any(address in net for net in NOT_PUBLIC if net.version == address.version)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host names, in any spelling ``getaddrinfo`` would accept."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:  # inet_aton: the legacy forms 2130706433, 0x7f000001, 0177.0.0.1, 127.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")  # RFC 6761 §6.3


def check_url(url: str, *, allow_http_loopback: bool) -> SplitResult:
    """Refuse, without any network access, a URL that could never be fetched.

    A literal address (in any spelling) must be public, or loopback when the deployment
    allows it; ``localhost`` names are loopback. Names are resolved only when fetched.
    """
    if not isinstance(url, str) or len(url) > 2000:
        raise FetchError("not a URL of at most 2000 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        raise FetchError("not a URL") from None
    if parts.fragment or "#" in url:
        raise FetchError("a fragment")
    if parts.username is not None or parts.password is not None:
        raise FetchError("user information in the URL")
    if not host or port == 0 or len(host) > 253:  # RFC 1035 §2.3.4
        raise FetchError("no host, or no valid host or port")
    literal = _literal_address(host)
    loopback = _loopback_name(host) or (literal is not None and literal.is_loopback and not
                                        (isinstance(literal, ipaddress.IPv6Address) and literal.ipv4_mapped))
    if loopback:
        if not allow_http_loopback or parts.scheme not in ("http", "https"):
            raise FetchError(f"loopback host {host!r}")
        return parts
    if parts.scheme != "https":
        raise FetchError(f"scheme {parts.scheme!r}")
    if literal is not None and not is_public(literal):
        raise FetchError(f"non-public address {literal}")
    return parts


Address = tuple[int, tuple[Any, ...]]  # (address family, socket address) as getaddrinfo gives it


def _resolve(host: str, port: int, *, allow_loopback: bool) -> list[Address]:
    """Every address ``host`` resolves to; all must be public (loopback when allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}", "network") from None
    addresses: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not (is_public(address) or (allow_loopback and address.is_loopback)):
            raise FetchError(f"{host!r} resolves to non-public address {address}")
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise FetchError(f"{host!r} has no address")
    return addresses


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address checked beforehand, named by its host.

    ``host`` stays the URL's host: it is the ``Host`` header, the TLS server name (SNI)
    and the name the certificate is verified against; only the TCP connection goes to
    ``address``.
    """

    def __init__(self, host: str, port: int, address: Address, *, tls: bool, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        family, sockaddr = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)  # the checked address itself: no second name lookup
        except OSError:
            sock.close()
            raise
        if self._tls:
            context = ssl.create_default_context(cafile=certifi.where())
            sock = context.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock

    def abort(self) -> None:
        """Called by the watchdog: end any blocked read at once."""
        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def fetch(url: str, *, allow_http_loopback: bool, method: str = "GET", body: bytes | None = None,
          headers: Mapping[str, str] | None = None, accept: str = "application/json",
          deadline: float = DEADLINE_SECONDS, bounded: bool = True) -> Fetched:
    """One request to ``url``; a 2xx answer within the deadline and size cap, else FetchError.

    ``bounded``: take one of the per-process fetch slots (refused at once when none is
    free). Background senders that already run on their own small pool pass False.
    """
    if bounded and not _slots.acquire(blocking=False):
        log.warning("outbound fetch refused: %d fetches already in flight", CONCURRENT_FETCHES)
        raise FetchError("too many outbound fetches in flight", "busy")
    try:
        return _fetch(url, allow_http_loopback=allow_http_loopback, method=method, body=body,
                      headers=headers or {}, accept=accept, deadline=deadline)
    except FetchError as exc:
        log.warning("outbound %s %s failed: %s", method, _for_log(url), exc.detail)
        metrics.fetch_failed(exc.reason)
        raise
    finally:
        if bounded:
            _slots.release()


def _fetch(url: str, *, allow_http_loopback: bool, method: str, body: bytes | None,
           headers: Mapping[str, str], accept: str, deadline: float) -> Fetched:
    parts = check_url(url, allow_http_loopback=allow_http_loopback)
    host = (parts.hostname or "").rstrip(".")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    addresses = _resolve(host, port, allow_loopback=allow_http_loopback)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = _PinnedConnection(host, port, addresses[0], tls=tls, timeout=deadline)
    aborted = threading.Event()

    def _expire() -> None:
        aborted.set()
        connection.abort()

    watchdog = threading.Timer(deadline, _expire)
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    try:
        request_headers = {"Accept": accept, "User-Agent": USER_AGENT, **headers}
        connection.request(method, target, body=body, headers=request_headers)
        response = connection.getresponse()
        if not 200 <= response.status < 300:
            raise FetchError(f"answered HTTP {response.status}", "status")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_BYTES:
            raise FetchError(f"declares {declared} bytes, more than {MAX_BYTES}", "size")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(16384):
            size += len(chunk)
            if size > MAX_BYTES:
                raise FetchError(f"more than {MAX_BYTES} bytes", "size")
            chunks.append(chunk)
            if time.monotonic() - started > deadline:
                raise FetchError(f"no complete answer within {deadline} s", "deadline")
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        return Fetched(response.status, answer_headers, b"".join(chunks))
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if aborted.is_set():
            raise FetchError(f"no complete answer within {deadline} s", "deadline") from None
        raise FetchError(f"{type(exc).__name__}: {exc}", "network") from None
    finally:
        watchdog.cancel()
        connection.close()


def _for_log(url: str) -> str:
    """The URL without its query (a request_uri's query may carry a secret handle)."""
    return urldefrag(url)[0].split("?", 1)[0]


def fetch_bytes(url: str, *, allow_http_loopback: bool, accept: str = "application/json") -> bytes:
    return fetch(url, allow_http_loopback=allow_http_loopback, accept=accept).body


def fetch_json(url: str, *, allow_http_loopback: bool) -> Any:
    return fetch(url, allow_http_loopback=allow_http_loopback).json()


def _max_age(headers: Mapping[str, str]) -> float:
    """Seconds a GET answer may be reused (RFC 9111 §5.2.2), capped; 0 for no-store/no-cache."""
    directives = {}
    for item in headers.get("cache-control", "").split(","):
        name, _, value = item.strip().partition("=")
        directives[name.lower()] = value.strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0
    if directives.get("max-age", "").isdigit():
        return min(int(directives["max-age"]), MAX_CACHE_SECONDS)
    if "expires" in headers:
        try:
            expires = email.utils.parsedate_to_datetime(headers["expires"]).timestamp()
        except (TypeError, ValueError):
            return 0
        return max(0.0, min(expires - time.time(), MAX_CACHE_SECONDS))
    return CACHE_SECONDS


class _Cache:
    """A small LRU of GET answers by URL, each with its own expiry."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, *, newer_than: float = 0.0) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now or entry[1] < newer_than:
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: str, body: bytes, max_age: float) -> None:
        now = time.monotonic()
        with self._lock:
            if max_age <= 0:
                self._entries.pop(key, None)
                return
            self._entries[key] = (now + max_age, now, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _Cache(CACHE_ENTRIES)


def fetch_cached(url: str, *, allow_http_loopback: bool, accept: str = "application/json",
                 cache_key: str | None = None, refresh_after: float | None = None) -> bytes:
    """A GET answer reused while its ``Cache-Control`` allows (default ``CACHE_SECONDS``).

    ``cache_key`` defaults to the URL (a ``request_uri``'s key keeps its fragment, which
    names the content's hash: OIDC Core §6.2). ``refresh_after``: refetch when the cached
    copy is older than this many seconds (a ``kid`` the copy lacks: OIDC Core §10.1.1).
    """
    key = cache_key or url
    newer_than = time.monotonic() - refresh_after if refresh_after is not None else 0.0
    body = _cache.get(key, newer_than=newer_than)
    if body is not None:
        return body
    answer = fetch(url, allow_http_loopback=allow_http_loopback, accept=accept)
    _cache.put(key, answer.body, _max_age(answer.headers))
    return answer.body


def clear_cache() -> None:
    """Forget every cached answer (tests that change an RP's documents in place)."""
    _cache.clear()
