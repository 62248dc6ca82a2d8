"""Single-use transitions that hold under concurrency, on SQLite and on PostgreSQL.

Every single-use thing (an enrolment, an activation or login challenge, a consent form,
an authorization code, a refresh token, a PAR ``request_uri``, a client assertion or DPoP
``jti``) must succeed exactly once, however many workers, instances and parallel
requests try it. Reading a row, checking it and writing it back does not give that:
``SELECT … FOR UPDATE`` is a no-op on SQLite, and with the pysqlite driver a read
before the first write is not even inside the writing transaction. So the only two
moves allowed for a single-use step are:

- :func:`compare_and_set`: one ``UPDATE … WHERE <expected state>``; exactly one
  concurrent request sees a row count of 1. PostgreSQL re-evaluates the ``WHERE`` on the
  row version left by a concurrent committed update (READ COMMITTED); SQLite runs the
  statement under its single write lock, so it sees every earlier commit.
- :func:`first_use`: one ``INSERT`` into the unique-keyed used-set (``seen_once``),
  ``ON CONFLICT`` doing nothing while the earlier entry is still live. The entry is kept
  until the item's own expiry (RFC 7523 §3 item 7, RFC 9449 §11.1), so a replay
  is recognised for as long as the item could still be accepted.

Both run in the caller's transaction: if the request then fails and rolls back, the
step is undone with everything else, and the item stays usable once more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp.storage.models import SeenOnce, utcnow

KEY_LENGTH = 128  # seen_once.key; longer keys are hashed by the caller, never truncated here


def compare_and_set(session: Session, entity: type, *expected: ColumnElement[bool], **values: Any) -> bool:
    """``UPDATE entity SET values WHERE expected``: True only for the one caller whose
    update changed exactly one row (the row was still in the expected state).

    ``expected`` must identify the row (its key) and state the condition that makes the
    transition legal (e.g. ``Enrollment.state == "begun"``). Objects of ``entity``
    already loaded in ``session`` get the new values.
    """
    if not expected or not values:
        raise ValueError("compare_and_set needs a condition and new values")
    result = session.execute(
        update(entity).where(*expected).values(**values).execution_options(synchronize_session="fetch"))
    return result.rowcount == 1


def first_use(session: Session, key: str, expires_at: datetime) -> bool:
    """True the first time ``key`` is used before ``expires_at``; False on any replay.

    An expired entry with the same key is taken over (the item it guarded can no longer be
    accepted anyway); a live one is left as it is.
    """
    if not key or len(key) > KEY_LENGTH:
        raise ValueError(f"a used-set key is 1 to {KEY_LENGTH} characters")
    now = utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(SeenOnce.__table__).values(key=key, expires_at=max(expires_at, now))
    statement = statement.on_conflict_do_update(
        index_elements=[SeenOnce.key],
        set_={"expires_at": statement.excluded.expires_at},
        where=SeenOnce.expires_at <= now,
    )
    # The row that was written, if any (psycopg reports no row count for an upsert).
    return session.connection().execute(statement.returning(SeenOnce.key)).first() is not None
