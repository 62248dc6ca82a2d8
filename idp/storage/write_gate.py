"""SQLite writers of one machine queue for the write lock instead of polling for it.

SQLite lets one transaction write at a time: the lock is taken by a transaction's first
write and held until it commits or rolls back. A writer that finds it taken sleeps in
SQLite's busy handler in growing steps (1, 2, 5, 10 … up to 100 ms) and is never woken
when the lock frees, so under parallel logins most writes wait far longer than the lock
was held (bench/README.md: p99 of the writing steps 5–10 times that of the reading ones).

The gate mirrors that lock exactly (taken just before a connection's first write
statement, released when the connection goes back to the pool after its commit or
rollback) but queues the waiters: the threads of a process on a lock that hands over at
once, and the head of each process's queue on an ``flock`` of ``<database>.write-gate``,
polled at sub-millisecond intervals. An ``flock`` dies with its process, so a killed
worker never leaves the gate shut. SQLite's own lock stays the guarantee: a writer that
does not use the gate (the ``idp`` command, another instance) is still excluded by it.
A write waits at most SQLite's busy timeout in all: time spent at the gate is taken off
the wait for SQLite's own lock, so a database frozen by an outside writer still answers
every queued request with a 503 within that bound (``idp.ops.outage``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")
_POLL_SECONDS = (0.0002, 0.0005, 0.001)  # then every millisecond
SHORTEN_AFTER = 0.05  # s waited at the gate before SQLite's own wait is cut to what is left


class WriteGate:
    def __init__(self, database_path: Path, timeout: float) -> None:
        self.path = Path(f"{database_path}.write-gate")
        self.timeout = timeout
        self._files: list[int] = []  # this process's descriptor, closed with the gate
        weakref.finalize(self, _close_all, self._files)
        self._open()
        _GATES.add(self)

    def _open(self) -> None:
        """This process's own state: a forked worker opens the file again (an ``flock`` belongs
        to the open file, which a fork would share with the arbiter) and starts unlocked."""
        _close_all(self._files)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._files.append(self._fd)
        self._threads = threading.Lock()
        self._holder: Any = None  # the DBAPI connection that holds the gate in this process
        self._shortened = False  # the holder's busy timeout was cut to what was left of the wait

    def acquire(self, holder: Any) -> float:
        """Take the gate for ``holder``; returns the seconds it waited."""
        fd = self._fd
        started = time.monotonic()
        deadline = started + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise _locked()
        try:
            attempt = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise _locked() from None
                    time.sleep(_POLL_SECONDS[min(attempt, len(_POLL_SECONDS) - 1)])
                    attempt += 1
        except BaseException:
            self._threads.release()
            raise
        self._holder = holder
        return time.monotonic() - started

    def release(self, holder: Any) -> None:
        if holder is None or holder is not self._holder:
            return
        self._holder = None
        try:
            if self._shortened:  # the connection waits as long as ever for its next write
                self._shortened = False
                holder.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        except sqlite3.Error:
            log.warning("write gate: could not restore a connection's busy timeout", exc_info=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._threads.release()

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before_write(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            dbapi_connection = conn.connection.dbapi_connection
            if dbapi_connection is not self._holder and statement.lstrip()[:6].upper() in _WRITES:
                waited = self.acquire(dbapi_connection)
                if waited > SHORTEN_AFTER:
                    # One bound for the whole wait: what is left of it for SQLite's own lock (held
                    # by a writer outside the gate, e.g. a frozen one), not the full timeout again.
                    self._shortened = True
                    left = max(1, int((self.timeout - waited) * 1000))
                    dbapi_connection.execute(f"PRAGMA busy_timeout={left}")

        # Back in the pool means committed or rolled back (reset on return); an invalidated
        # or closed connection's transaction has ended with it.
        for name in ("checkin", "invalidate", "soft_invalidate", "close", "close_detached"):
            event.listen(engine, name, lambda dbapi_connection, *_: self.release(dbapi_connection))


_GATES: weakref.WeakSet[WriteGate] = weakref.WeakSet()


def _close_all(files: list[int]) -> None:
    while files:
        os.close(files.pop())


def _after_fork() -> None:
    for gate in list(_GATES):
        gate._open()


os.register_at_fork(after_in_child=_after_fork)


def _locked() -> OperationalError:
    return OperationalError("write gate", None, Exception("database is locked (waited for the write gate)"))
