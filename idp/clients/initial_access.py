"""Initial access tokens bound to an RP category (RFC 7591 §3; docs/rp-integration.md, "Onboarding").

RFC 7591 §3 leaves the token's form to the authorization server; here the operator mints
one with ``idp clients token --category C`` and hands it to an RP out of band. Whoever
presents it registers a client of category C and nothing else, so the category an RP
receives claims under is the operator's decision, not the RP's.

The token is random, shown once, and kept only as a SHA-256 digest. Its remaining uses are
spent by a single conditional ``UPDATE`` inside the registration's transaction: two
registrations racing for the last use cannot both succeed (the database serialises the
row), and a registration that fails later rolls its use back with everything else.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from idp.clients.registry import digest
from idp.policy import CATEGORIES
from idp.storage.models import InitialAccessToken, utcnow

DEFAULT_LIFETIME = 7 * 24 * 3600
MAX_LIFETIME = 366 * 24 * 3600


def mint(session: Session, category: str, *, expires_in: int | None = DEFAULT_LIFETIME,
         uses: int | None = 1) -> str:
    """Store a new token for ``category``; returns the token itself (shown once, never stored).

    ``expires_in=None`` never expires and ``uses=None`` is unlimited: both are the operator's
    explicit choice, never the default.
    """
    if category not in CATEGORIES:
        raise ValueError(f"--category must be one of {', '.join(CATEGORIES)}")
    if expires_in is not None and not 60 <= expires_in <= MAX_LIFETIME:
        raise ValueError(f"--expires-in must be between 60 and {MAX_LIFETIME} seconds")
    if uses is not None and uses < 1:
        raise ValueError("--uses must be at least 1")
    token = secrets.token_urlsafe(32)
    expires_at: datetime | None = utcnow() + timedelta(seconds=expires_in) if expires_in else None
    session.add(InitialAccessToken(token_hash=digest(token), rp_category=category,
                                   expires_at=expires_at, uses_left=uses))
    session.flush()
    return token


def spend(session: Session, token: str) -> str | None:
    """Spend one use of ``token``; returns its category, or None for an unknown, expired or
    used-up token. One conditional UPDATE decides (no read-check-write race)."""
    if not token or len(token) > 256:
        return None
    token_hash = digest(token)
    now = utcnow()
    spent = session.execute(
        update(InitialAccessToken)
        .where(InitialAccessToken.token_hash == token_hash,
               or_(InitialAccessToken.expires_at.is_(None), InitialAccessToken.expires_at > now),
               or_(InitialAccessToken.uses_left.is_(None), InitialAccessToken.uses_left > 0))
        .values(uses_left=InitialAccessToken.uses_left - 1)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        return None
    return session.scalar(select(InitialAccessToken.rp_category).where(InitialAccessToken.token_hash == token_hash))
