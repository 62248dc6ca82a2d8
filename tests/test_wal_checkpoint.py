"""SQLite's WAL checkpoint runs in a thread of each serving process, never inside a request's
commit (idp.storage.checkpoint): the request connections leave it off, the thread copies the
WAL back without taking the write lock, and a served instance does it on its own."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from sqlalchemy import text

from idp.storage.checkpoint import INTERVAL, WalCheckpointer
from idp.storage.db import Database
from tests.support.lifecycle import rp
from tests.support.server import serve_idp


def _writes(database: Database, count: int) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, body TEXT)"))
    for _ in range(count):
        with database.engine.begin() as connection:
            connection.execute(text("INSERT INTO filler (body) VALUES (:body)"), {"body": "x" * 3000})


def _automatic_checkpoint(database: Database) -> int:
    with database.engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()


def test_without_the_thread_sqlite_checkpoints_in_the_commit_as_ever(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'idp.db'}")
    try:
        assert _automatic_checkpoint(database) == 1000
    finally:
        database.dispose()


@contextlib.contextmanager
def checkpointed(tmp_path, interval: float) -> Iterator[tuple[Path, Database, WalCheckpointer]]:
    path = tmp_path / "idp.db"
    database = Database(f"sqlite:///{path}")
    checkpointer = WalCheckpointer(path, interval=interval)
    checkpointer.attach(database.engine)
    try:
        yield path, database, checkpointer
    finally:
        checkpointer.stop()
        database.dispose()


def test_the_thread_checkpoints_and_the_connections_do_not(tmp_path):
    with checkpointed(tmp_path, interval=0.05) as (path, database, checkpointer):
        assert _automatic_checkpoint(database) == 0
        _writes(database, 600)  # about 1.8 MB, in the WAL until a checkpoint copies it
        deadline = time.monotonic() + 10
        while path.stat().st_size < 1_500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= 1_500_000  # only a checkpoint writes the database file
        assert checkpointer.checkpoints >= 1


def test_a_checkpoint_never_waits_for_a_writer_nor_makes_it_wait(tmp_path):
    with checkpointed(tmp_path, interval=3600) as (path, database, checkpointer):
        _writes(database, 50)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock
        writer.execute("INSERT INTO filler (body) VALUES ('held')")
        started = time.monotonic()
        busy, frames, copied = checkpointer.checkpoint()
        assert time.monotonic() - started < 1.0
        assert busy == 0 and copied == frames > 0  # PASSIVE: copies what is committed, lock or not
        started = time.monotonic()
        writer.execute("COMMIT")
        assert time.monotonic() - started < 1.0
        writer.close()


def test_a_served_instance_checkpoints_in_the_background(tmp_path, jpki_ca):
    """Writes go to the WAL; only a checkpoint changes the database file. A few client registrations are
    far from SQLite's own threshold and the workers keep their connections open, so only the
    workers' threads can have copied them into the file within a few seconds."""
    path = tmp_path / "served.db"
    with serve_idp(tmp_path / "idp", jpki_ca, workers=2, env={"IDP_DATABASE_URL": f"sqlite:///{path}"}) as server:
        assert requests.get(server.url("/readyz"), timeout=10).ok
        time.sleep(2 * INTERVAL + 0.5)  # whatever start-up left in the WAL is copied back by now
        before = path.stat().st_mtime_ns
        for _ in range(3):
            rp(server)
        deadline = time.monotonic() + 10
        while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.stat().st_mtime_ns != before
