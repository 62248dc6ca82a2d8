"""Kill the gunicorn worker that is serving a request, in the middle of its transaction.

No hook in the product: the test holds a database lock so the request's worker blocks
inside its own transaction, finds that worker from outside (the process holding the
accepted connection, read from ``/proc``), sends it SIGKILL and only then releases the
lock.

- PostgreSQL: ``LOCK TABLE … IN ACCESS EXCLUSIVE MODE`` on a table the request touches
  late; the request has already written (its backend has a transaction id) when it
  blocks there. The killed worker's backend is gone before the tables are checked.
- SQLite: ``BEGIN IMMEDIATE`` on the database file; the request has read and checked
  everything and waits for the write lock of its transaction. :func:`stop_inside_write`
  goes further: it lets the request take the write lock and stops its worker inside the
  write transaction, for a kill between its first write and the end of its commit.

    with database_held(server, table="tokens") as lock:
        request = InFlight.send(server, prepared)
        lock.wait_blocked(request)
        request.kill_handler()
    lock.wait_gone()
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.support.server import ServedIdP

BLOCK_TIMEOUT = 10.0  # below the server's 15 s statement and 10 s SQLite busy timeouts
PROBE_INTERVAL = 0.0005  # s between write-lock probes: the lock is free 99 % of the time


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the server-side TCP socket 127.0.0.1:local_port ↔ 127.0.0.1:remote_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            return inode
    return None


def _holder_of(pids: list[int], inode: str) -> int | None:
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


@dataclass
class InFlight:
    """One HTTP request sent on its own connection from a thread; ``outcome`` is the
    response or the exception once it ended."""

    server: ServedIdP
    connection: http.client.HTTPConnection
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Any = None

    @classmethod
    def send(cls, server: ServedIdP, prepared: requests.PreparedRequest) -> "InFlight":
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.connect()
        flight = cls(server, connection)
        path = prepared.path_url
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body

        def run() -> None:
            try:
                connection.request(prepared.method or "POST", path, body=body, headers=dict(prepared.headers))
                response = connection.getresponse()
                flight.outcome = (response.status, response.read())
            except Exception as exc:  # the worker was killed: the connection drops
                flight.outcome = exc
            finally:
                flight.done.set()

        threading.Thread(target=run, daemon=True).start()
        return flight

    def handler(self) -> int:
        """The pid of the worker process holding this request's accepted connection."""
        client_port = self.connection.sock.getsockname()[1]
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while time.monotonic() < deadline:
            inode = _socket_inode(self.server.port, client_port)
            pid = _holder_of(_children(self.server.process.pid), inode) if inode else None
            if pid is not None:
                return pid
            time.sleep(0.05)
        raise AssertionError("no worker holds the request's connection")

    def kill_handler(self) -> int:
        """SIGKILL the worker serving this request (while it is still unanswered)."""
        assert not self.done.is_set(), f"the request ended before the kill: {self.outcome!r}"
        pid = self.handler()
        os.kill(pid, signal.SIGKILL)
        assert self.done.wait(BLOCK_TIMEOUT), "the killed worker's connection stayed open"
        assert isinstance(self.outcome, Exception), f"a killed request got an answer: {self.outcome!r}"
        return pid


class PostgresLock:
    def __init__(self, server: ServedIdP, table: str) -> None:
        self.url = server.database_url.replace("postgresql+psycopg://", "postgresql://")
        self.table = table
        self.connection = psycopg.connect(self.url)
        self.connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        self.blocked_backend: int | None = None

    def wait_blocked(self, flight: InFlight) -> None:
        """Until a backend waits for our lock, having already written in its transaction."""
        deadline = time.monotonic() + BLOCK_TIMEOUT
        with psycopg.connect(self.url, autocommit=True) as probe:
            while time.monotonic() < deadline:
                assert not flight.done.is_set(), f"the request ended unblocked: {flight.outcome!r}"
                row = probe.execute(
                    "SELECT a.pid, a.backend_xid IS NOT NULL FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE NOT l.granted AND l.relation = %s::regclass", (self.table,)).fetchone()
                if row:
                    assert row[1], "the request blocked before it wrote anything"
                    self.blocked_backend = row[0]
                    return
                time.sleep(0.05)
        raise AssertionError(f"no request blocked on {self.table}")

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()

    def wait_gone(self) -> None:
        """Until the blocked request's backend has left (a killed worker's: rolled back)."""
        if self.blocked_backend is None:
            return
        deadline = time.monotonic() + BLOCK_TIMEOUT
        with psycopg.connect(self.url, autocommit=True) as probe:
            while probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                (self.blocked_backend,)).fetchone():
                assert time.monotonic() < deadline, "the killed request's backend stayed"
                time.sleep(0.05)


class SqliteLock:
    SETTLE = 1.0  # a request needs a few ms; unanswered after this, it waits for the write lock

    def __init__(self, server: ServedIdP) -> None:
        self.connection: sqlite3.Connection | None = sqlite3.connect(
            server.database_url.split("///", 1)[1], isolation_level=None)
        self.connection.execute("BEGIN IMMEDIATE")

    def wait_blocked(self, flight: InFlight) -> None:
        flight.handler()  # a worker has the request
        time.sleep(self.SETTLE)
        assert not flight.done.is_set(), f"the request ended unblocked: {flight.outcome!r}"

    def release(self) -> None:
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None

    def wait_gone(self) -> None:
        """Nothing to wait for: a killed SQLite writer holds no lock."""


def _write_locked(probe: sqlite3.Connection) -> bool:
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # "database is locked": a writer is inside its transaction
        return True
    probe.execute("ROLLBACK")
    return False


def stop_inside_write(server: ServedIdP, flight: InFlight, lock: SqliteLock) -> int | None:
    """SQLite: release ``lock`` (the request's worker waits for it) and SIGSTOP that worker
    while it holds the write lock, i.e. inside its write transaction, after its first write
    and before its commit has ended. The worker's pid, or None if the request ended first.

    The probe takes the write lock for microseconds every ``PROBE_INTERVAL``, so the
    worker's busy handler gets it almost at once; confirmed again once the worker is
    stopped (it may have committed meanwhile: then it is let go and None returned).
    """
    pid = flight.handler()
    probe = sqlite3.connect(server.database_url.split("///", 1)[1], isolation_level=None, timeout=0)
    try:
        lock.release()
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while time.monotonic() < deadline and not flight.done.is_set():
            if _write_locked(probe):
                os.kill(pid, signal.SIGSTOP)
                if _write_locked(probe):
                    return pid
                os.kill(pid, signal.SIGCONT)
            time.sleep(PROBE_INTERVAL)
        return None
    finally:
        probe.close()


@contextlib.contextmanager
def database_held(server: ServedIdP, table: str) -> Iterator[PostgresLock | SqliteLock]:
    """Hold ``table`` (PostgreSQL) or the whole database (SQLite) until the block ends."""
    lock: PostgresLock | SqliteLock = (
        PostgresLock(server, table) if server.database_url.startswith("postgresql") else SqliteLock(server))
    try:
        yield lock
    finally:
        lock.release()


def wait_for_workers(server: ServedIdP, count: int) -> None:
    """gunicorn replaces a killed worker; wait until ``count`` answer again."""
    deadline = time.monotonic() + 30
    while len(_children(server.process.pid)) < count:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.1)
    requests.get(server.url("/.well-known/openid-configuration"), timeout=30).raise_for_status()
