"""Pairwise subject identifiers (OpenID Connect Core 1.0 §8.1).

The one place a ``sub`` is made. §8.1 suggests ``hash(sector_identifier ||
local_account_id || salt)``; we use HMAC-SHA-256 keyed with the secret salt, which is
that construction done right (no length-extension, unambiguous field separation).
The account id is internal and stable across phones, so a new device keeps every
``sub``; a different sector yields an unrelated value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Sequence
from urllib.parse import urlsplit


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
NATIVE_SECTOR_PREFIX = "native:"  # no host name contains a colon, so no host sector collides


def identifies_no_operator(redirect_uri: str) -> bool:
    """A loopback ``http`` redirect (RFC 8252 §7.3) or a private-use scheme (§7.1): any app
    on any phone or computer may use it, so its host says nothing about who runs the RP."""
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http":
        return (parts.hostname or "").lower() in LOOPBACK_HOSTS
    return parts.scheme != "https"


def native_without_sector(*, redirect_uris: Sequence[str], sector_identifier_uri: str | None,
                          application_type: str | None) -> bool:
    """A native client whose every redirect URI identifies no operator, with no
    ``sector_identifier_uri``: it gets a sector of its own."""
    return (application_type == "native" and not sector_identifier_uri and bool(redirect_uris)
            and all(identifies_no_operator(uri) for uri in redirect_uris))


def sector_identifier(*, redirect_uris: Sequence[str], sector_identifier_uri: str | None,
                      application_type: str | None = None, client_id: str | None = None) -> str:
    """OIDC Core §8.1: the host of ``sector_identifier_uri`` if given, else of the one redirect URI.

    Three unrelated native apps all redirecting to ``http://127.0.0.1:<port>`` would share
    the sector ``127.0.0.1`` and so every person's ``sub``: such a client (see
    :func:`native_without_sector`) is its own sector, ``native:<client_id>``. Registration
    (OIDC Registration §2) refuses several redirect hosts without a
    ``sector_identifier_uri`` otherwise, so the value is always defined here.
    """
    if native_without_sector(redirect_uris=redirect_uris, sector_identifier_uri=sector_identifier_uri,
                             application_type=application_type):
        if not client_id:
            raise ValueError("a native client's own sector needs its client_id")
        return NATIVE_SECTOR_PREFIX + client_id
    source = sector_identifier_uri or (redirect_uris[0] if redirect_uris else "")
    host = urlsplit(source).hostname
    if not host:
        raise ValueError("no host to derive the sector identifier from")
    return host.lower()


def redirect_hosts(redirect_uris: Sequence[str]) -> set[str]:
    return {(urlsplit(uri).hostname or "").lower() for uri in redirect_uris}


def pairwise_sub(*, sector: str, account_id: str, salt: bytes) -> str:
    message = sector.encode("utf-8") + b"\x00" + account_id.encode("utf-8")
    digest = hmac.new(salt, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

