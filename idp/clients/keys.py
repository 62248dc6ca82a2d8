"""A client's public keys (``jwks`` or ``jwks_uri``) for private_key_jwt and signed request objects.

``jwks_uri`` documents are cached per process (as their ``Cache-Control`` allows) and
fetched again when a token names a ``kid`` the cached copy does not hold: that is how an
RP rotates its keys (OIDC Core §10.1.1) without re-registering. Such a refetch happens at
most once per ``REFETCH_INTERVAL``, so unknown ``kid``s cannot turn the IdP into a
request amplifier.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp import bounded_json
from idp.clients.fetch import FetchError, fetch_cached
from idp.clients.registry import RegisteredClient
from idp.context import services

REFETCH_INTERVAL = 10


class ClientKeyError(JoseError):
    """Raised inside token verification, so authlib answers ``invalid_client``, not a 500."""

    error = "invalid_client"


def _load_uri(uri: str, *, force: bool) -> KeySet:
    """The key set at ``uri`` through the outbound-fetch cache (``Cache-Control`` honoured)."""
    try:
        body = fetch_cached(uri, allow_http_loopback=services().settings.allow_http_loopback,
                            refresh_after=REFETCH_INTERVAL if force else None)
        return _parsed_keys(body)
    except FetchError as exc:
        raise ClientKeyError(f"jwks_uri {exc}") from None
    except (JoseError, ValueError, TypeError, KeyError):
        raise ClientKeyError("jwks_uri did not return a usable JWK Set") from None


@functools.lru_cache(maxsize=128)
def _parsed_keys(document: bytes) -> KeySet:
    return KeySet.import_key_set(bounded_json.loads(document))


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
