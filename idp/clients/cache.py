"""Clients kept per process for `/authorize` and `/token`, trusted only when a write confirms them.

Both endpoints read their client on every request: a statement each, on the login's hot path.
An operator's ``idp clients disable``, an RFC 7592 update or delete happen in other processes,
with no channel to tell this one; a cached client must still never be used once changed. So:

- every change to a client increments its ``revision`` (``Client`` ``before_update``);
- a request of these two endpoints (at ``/token``, the code grant only) may take its client
  from this process's cache, and the one write that makes its outcome (the transaction or
  code inserted at ``/authorize``, the code spent at ``/token``) checks in the same statement
  that the client's revision is still the one cached (:func:`guard`). A write that finds it
  changed writes nothing;
- a request that took a cached client and ends in anything but such a confirmed write (the
  write found the client changed, an error, a refusal) is rolled back and answered again from
  fresh rows (:func:`answer_with_cached_clients`).

So a code or a token is only ever issued for a client as it is in the database at that moment,
and every refusal is decided on the client as it is now. A fresh read refreshes the cache.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, make_response
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, Insert, bindparam, exists, insert, select
from sqlalchemy.orm import Session

from idp.storage.models import Client
from idp.storage.rows import insert_row

MAX_CLIENTS = 2048
_COLUMNS = tuple(column.name for column in Client.__table__.c)
ClientRow = namedtuple("ClientRow", _COLUMNS)  # type: ignore[misc]
"""A client's columns, detached from the request that read them."""


class ClientCache:
    """One app's kept client rows, least recently used out first (one per app: its database)."""

    def __init__(self, size: int = MAX_CLIENTS) -> None:
        self.size = size
        self._rows: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, row: Any) -> None:
        snapshot = ClientRow(*(getattr(row, name) for name in _COLUMNS))
        with self._lock:
            self._rows[snapshot.client_id] = snapshot
            self._rows.move_to_end(snapshot.client_id)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def get(self, client_id: str) -> Any | None:
        with self._lock:
            return self._rows.get(client_id)


class StaleClient(Exception):
    """The write that relied on a cached client found it changed."""


def _app_cache() -> ClientCache:
    return current_app.extensions["idp"].clients  # idp.context.Services (which imports this module)


def keep(row: Any) -> None:
    """Remember a client row read fresh in this request."""
    _app_cache().keep(row)


def cached(client_id: str) -> Any | None:
    """The kept row of ``client_id``, only in a request that may use it (and then noted, so
    the request's outcome is confirmed or answered again)."""
    if not g.get("cache_clients"):
        return None
    row = _app_cache().get(client_id)
    if row is not None:
        g.setdefault("cached_revisions", {})[client_id] = row.revision
    return row


def guard(client_id: str) -> int | None:
    """The revision the request's write must find (None: the client was read fresh)."""
    revisions: dict[str, int] = g.get("cached_revisions") or {}
    return revisions.get(client_id)


def current() -> ColumnElement[bool]:
    """``EXISTS`` the client of bound ``guard_client`` at bound ``guard_revision``, for a guarded write."""
    table = Client.__table__
    return exists().where(table.c.client_id == bindparam("guard_client"),
                          table.c.revision == bindparam("guard_revision"))


def insert_row_confirming(session: Session, entity: type, client: str, /, **values: Any) -> None:
    """:func:`idp.storage.rows.insert_row`, or, when the request took ``client`` from the
    cache, one ``INSERT … SELECT … WHERE`` the client is still at the cached revision."""
    revision = guard(client)
    if revision is None:
        insert_row(session, entity, **values)
        return
    statement = _guarded_insert(entity, tuple(values))
    written = session.connection().execute(statement, {**values, "guard_client": client,
                                                       "guard_revision": revision}).rowcount == 1
    confirmed(written)


@functools.cache
def _guarded_insert(entity: type, names: tuple[str, ...]) -> Insert:
    table = entity.__table__  # type: ignore[attr-defined]
    return insert(table).from_select(
        list(names), select(*(bindparam(name, type_=table.c[name].type) for name in names)).where(current())
    ).execution_options(preserve_rowcount=True)  # an INSERT's row count is otherwise not kept (psycopg)


def confirmed(written: bool) -> None:
    """Note the outcome of a guarded write; raises :class:`StaleClient` when it wrote nothing."""
    if not written:
        raise StaleClient
    g.client_confirmed = True


def answer_with_cached_clients(view: Callable[[], ResponseReturnValue]) -> Response:
    """Run ``view`` with cached clients allowed; again on fresh rows unless a guarded write
    confirmed every cached client it used (module docstring)."""
    g.cache_clients = True
    try:
        response = make_response(view())
        if not g.get("cached_revisions") or g.get("client_confirmed"):
            return response
    except Exception:  # noqa: BLE001 - decided on a cached client: decided again below
        if not g.get("cached_revisions"):
            raise
    from idp.oidc.session import current_db  # (which imports, through idp.context, this module)

    current_db().rollback()
    for key in ("cache_clients", "cached_revisions", "client_confirmed", "registered_clients",
                "commit_despite_error"):
        g.pop(key, None)
    return make_response(view())
