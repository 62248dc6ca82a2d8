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


def sector_identifier(*, redirect_uris: Sequence[str], sector_identifier_uri: str | None) -> str:
    """OIDC Core §8.1: the host of ``sector_identifier_uri`` if given, else of the one redirect URI.

    Registration (OIDC Registration §2) refuses several redirect hosts without a
    ``sector_identifier_uri``, so the value is always defined here.
    """
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

