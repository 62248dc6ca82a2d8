"""Registered clients, kept per process for a few seconds instead of read on every request.

A login reads its client on five of its seven requests; clients change only through
registration, RFC 7592 management and the operator's commands. Each process keeps what
it read for :data:`CLIENT_CACHE_SECONDS` and forgets a client as soon as this process
writes it (any ORM flush that inserts, updates or deletes a ``clients`` row, whichever
module does it), so a change is seen at once by the process that made it and within
:data:`CLIENT_CACHE_SECONDS` by the other workers and instances.

What is cached is a detached copy of the row, never attached to a session, so nothing
written through a request's session can come from it. Unknown client ids are not cached
(an attacker cannot fill the cache), and the cache holds at most :data:`MAX_CLIENTS`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

from idp.storage.models import Client

CLIENT_CACHE_SECONDS = 5.0
MAX_CLIENTS = 20_000
_CHANGED_KEY = "clients_changed"


class ClientCache:
    """client_id → (time read, detached copy of its row)."""

    def __init__(self, ttl: float = CLIENT_CACHE_SECONDS, capacity: int = MAX_CLIENTS) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._entries: dict[str, tuple[float, Client]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str, load: Callable[[], Client | None]) -> Client | None:
        now = time.monotonic()
        entry = self._entries.get(client_id)
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        row = load()
        if row is None:
            self.forget(client_id)
            return None
        copy = detached_copy(row)
        with self._lock:
            if len(self._entries) >= self.capacity and client_id not in self._entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest read
            self._entries[client_id] = (now, copy)
        return copy

    def forget(self, client_id: str | None = None) -> None:
        with self._lock:
            if client_id is None:
                self._entries.clear()
            else:
                self._entries.pop(client_id, None)


def detached_copy(row: Client) -> Client:
    return Client(**{column.key: getattr(row, column.key) for column in Client.__table__.columns})


clients = ClientCache()


@event.listens_for(Session, "after_flush")
def _note_client_writes(session: Session, _context: object) -> None:
    changed = {obj.client_id for obj in (*session.new, *session.dirty, *session.deleted) if isinstance(obj, Client)}
    if changed:
        session.info.setdefault(_CHANGED_KEY, set()).update(changed)
        for client_id in changed:  # forget now, and again at commit (a reader may re-cache the old row meanwhile)
            clients.forget(client_id)


@event.listens_for(Session, "after_commit")
def _forget_committed(session: Session) -> None:
    for client_id in session.info.pop(_CHANGED_KEY, ()):
        clients.forget(client_id)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    for client_id in session.info.pop(_CHANGED_KEY, ()):
        clients.forget(client_id)
