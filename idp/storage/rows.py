"""Writing a row the request never reads back: one plain ``INSERT``.

Rows of the login hot path that are written once and not used again in the same request
(a transaction, an authorization code, a token, a disclosure, a browser session) skip the
session's unit of work: no object to track, no flush planning at commit. The insert runs
at once on the request's transaction, so it commits or rolls back with everything else;
column defaults (``created_at``…) apply as for the ORM. It does not flush what the
session has pending first (pending changes are written together, later), so a row
inserted here must not refer to a row that is only pending in the session.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, insert
from sqlalchemy.orm import Session


def insert_row(session: Session, entity: type, **values: Any) -> None:
    """The values go as parameters of one statement built once per table (a statement built
    with ``.values()`` would be built, and its cache key computed, on every call)."""
    session.connection().execute(_insert(entity), values)


@functools.cache
def _insert(entity: type) -> Insert:
    return insert(entity.__table__)  # type: ignore[attr-defined]
