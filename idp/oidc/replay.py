"""Remember one-time values across instances (RFC 7523 §3 item 7: a ``jti`` is used once)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from idp.oidc.session import current_db
from idp.storage.models import SeenOnce, utcnow


def remember_once(key: str, ttl_seconds: int) -> bool:
    """True the first time ``key`` is seen within its lifetime, False on a replay."""
    session = current_db()
    now = utcnow()
    session.execute(delete(SeenOnce).where(SeenOnce.key == key[:128], SeenOnce.expires_at <= now))
    try:
        with session.begin_nested():
            session.add(SeenOnce(key=key[:128], expires_at=now + timedelta(seconds=ttl_seconds)))
    except IntegrityError:
        return False
    return True
