"""One-time values across workers and instances (RFC 7523 §3 item 7: a ``jti`` is used once).

A thin layer over :func:`idp.storage.single_use.first_use`: keys are hashed (a ``jti`` is
chosen by the client and may be long) and namespaced by what they guard.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from idp.oidc.session import current_db
from idp.storage.models import utcnow
from idp.storage.single_use import first_use


def used_key(namespace: str, *parts: str) -> str:
    """A fixed-length used-set key for ``parts`` within ``namespace`` (e.g. ``jti``)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{namespace}:{digest}"


def remember_until(namespace: str, *parts: str, expires_at: datetime) -> bool:
    """True the first time ``parts`` is seen before ``expires_at``, False on a replay."""
    return first_use(current_db(), used_key(namespace, *parts), expires_at)


def remember_once(key: str, ttl_seconds: int) -> bool:
    """True the first time ``key`` is seen within ``ttl_seconds``, False on a replay."""
    return remember_until("once", key, expires_at=utcnow() + timedelta(seconds=ttl_seconds))
