"""A client's public keys (``jwks`` or ``jwks_uri``) for private_key_jwt and signed request objects.

``jwks_uri`` documents are cached per process and fetched again when a token names a
``kid`` the cache does not hold: that is how an RP rotates its keys (OIDC Core §10.1.1)
without re-registering. A refetch is rate-limited so unknown ``kid``s cannot turn the
IdP into a request amplifier.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any, Callable

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.clients.fetch import FetchError, fetch_json
from idp.clients.registry import RegisteredClient
from idp.context import services

CACHE_SECONDS = 300
REFETCH_INTERVAL = 10

_cache: dict[str, tuple[float, KeySet]] = {}
_lock = threading.Lock()


class ClientKeyError(JoseError):
    """Raised inside token verification, so authlib answers ``invalid_client``, not a 500."""

    error = "invalid_client"


def _load_uri(uri: str, *, force: bool) -> KeySet:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(uri)
    if cached and (now - cached[0] < (REFETCH_INTERVAL if force else CACHE_SECONDS)):
        return cached[1]
    try:
        data = fetch_json(uri, allow_http_loopback=services().settings.allow_http_loopback)
        keys = KeySet.import_key_set(data)
    except (FetchError, JoseError, ValueError, TypeError, KeyError) as exc:
        if cached:
            return cached[1]
        raise ClientKeyError(f"jwks_uri unusable: {exc}") from None
    with _lock:
        _cache[uri] = (now, keys)
    return keys


@functools.lru_cache(maxsize=512)
def _inline_keys(document: str) -> KeySet:
    """Registered ``jwks`` parsed once per distinct document, not on every client assertion."""
    return KeySet.import_key_set(json.loads(document))


def client_keys(client: RegisteredClient, *, kid: str | None = None) -> KeySet:
    meta = client.metadata
    if "jwks" in meta:
        return _inline_keys(json.dumps(meta["jwks"], sort_keys=True))
    uri = meta.get("jwks_uri")
    if not uri:
        raise ClientKeyError("the client registered no keys")
    keys = _load_uri(uri, force=False)
    if kid is not None and not any(k.kid == kid for k in keys.keys):
        keys = _load_uri(uri, force=True)
    return keys


def client_key_resolver(client: RegisteredClient) -> Callable[[Any], Any]:
    """A joserfc key callable: picks the key by the token's ``kid``, refetching on a miss."""

    def resolve(token: Any) -> Any:
        header = token.headers()
        kid = header.get("kid")
        keys = client_keys(client, kid=kid)
        if kid is None:
            return keys
        try:
            return keys.get_by_kid(kid)
        except JoseError:
            raise ClientKeyError(f"no client key with kid {kid!r}") from None

    return resolve
