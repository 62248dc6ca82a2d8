"""Writing a row the request never reads back: one plain ``INSERT``.

Rows of the login hot path that are written once and not used again in the same request
(a transaction, an authorization code, a token, a disclosure) skip the session's unit of
work: no object to track, no flush planning at commit. The insert still runs in the
request's transaction (after whatever the session has pending), so it commits or rolls
back with everything else; column defaults (``created_at``…) apply as for the ORM.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session


def insert_row(session: Session, entity: type, **values: Any) -> None:
    session.execute(insert(entity.__table__).values(**values))  # type: ignore[attr-defined]
