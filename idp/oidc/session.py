"""One database transaction per request: commit on success, roll back on any error.

A request that fails leaves nothing half-written. The one exception is a deliberate
security side effect of a refused request (revoking the tokens of a replayed code,
counting a failed assertion, locking a credential): the code sets
``g.commit_despite_error`` so the refusal and its effect are both kept. A commit the
database cannot confirm (connection lost, timeout) answers 503 instead of the response.
"""

from __future__ import annotations

from flask import Flask, Response, g
from sqlalchemy.orm import Session

from idp.context import services
from idp.ops.outage import DATABASE_ERRORS, database_unavailable


def current_db() -> Session:
    session = g.get("db_session")
    if session is None:
        session = services().db.sessions()
        g.db_session = session
    return session


def init_app(app: Flask) -> None:
    @app.after_request
    def _finish(response: Response) -> Response:
        session: Session | None = g.pop("db_session", None)
        if session is None:
            return response
        try:
            if response.status_code < 400 or (response.status_code < 500 and g.get("commit_despite_error")):
                session.commit()
            else:
                session.rollback()
        except DATABASE_ERRORS as exc:  # the commit's outcome is unknown: the client retries
            return database_unavailable(exc)
        finally:
            session.close()
        return response

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.rollback()
            session.close()
