"""The database handle: one engine per process, one session (and transaction) per request.

Every lifecycle step runs in a single transaction that commits together with its audit
entry, so a crash half-way leaves the previous state intact.

Every wait on the database is bounded, so a frozen database path costs a request a few
seconds and a clear 503 (``idp.ops.outage``), never a stalled worker: PostgreSQL connects
time out after ``CONNECT_TIMEOUT`` s, statements after ``STATEMENT_TIMEOUT_MS`` and a
request waits at most ``POOL_TIMEOUT`` s for a pooled connection; SQLite waits at most
``SQLITE_BUSY_TIMEOUT_MS`` for the write lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.storage.checkpoint import WalCheckpointer
from idp.storage.write_gate import WriteGate

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT_MS = 15_000
POOL_TIMEOUT = 5
SQLITE_BUSY_TIMEOUT_MS = 10_000
VERSION_TABLE = "alembic_version"  # alembic's default, which idp/migrations/env.py keeps
_MIGRATION_LOCK_ID = 0x69645F6D69677261  # pg_advisory_lock key: one `idp db upgrade` at a time


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.sqlite_path = _sqlite_file(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits as one unit, or not at all."""
        with self.sessions() as session, session.begin():
            yield session

    def upgrade(self) -> bool:
        """Bring the schema to the newest alembic revision; True when a migration ran.

        Several instances may start (or run ``idp db upgrade``) at once on a fresh database.
        On PostgreSQL a session-level advisory lock makes them take turns: the first one
        migrates, the others then find the schema at head and do nothing. SQLite's own
        driver does not wrap DDL in a transaction, so a lock file beside the database file
        serialises the instances of one machine (the only ones that can share it).
        """
        from alembic import command

        config = alembic_config(self.url)
        with _sqlite_file_lock(self.url), self.engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SET statement_timeout = 0"))  # a long migration is not an outage
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK_ID})
                connection.commit()
            try:
                before = _current_heads(connection)
                connection.commit()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
                changed = _current_heads(connection) != before
                connection.commit()
            finally:
                if postgres:
                    connection.rollback()
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK_ID})
                    connection.commit()
        return changed

    def schema_at_head(self) -> bool:
        """Whether the database's revision is the newest one this code knows."""
        with self.engine.connect() as connection:
            return _current_heads(connection) == code_heads()

    def dispose(self) -> None:
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked serving worker: never reuse the parent's connections, and on SQLite
        checkpoint the WAL in a thread of this process (idp.storage.checkpoint)."""
        self.engine.dispose(close=False)
        if self.sqlite_path is not None:
            WalCheckpointer(self.sqlite_path).attach(self.engine)


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
    if not path or path == ":memory:":
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _current_heads(connection: Connection) -> frozenset[str]:
    """The revision(s) alembic recorded in its version table (none before the first migration),
    read with a plain query: a serving process answers ``/readyz`` without importing alembic."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    return frozenset(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


_CODE_HEADS: frozenset[str] | None = None


def code_heads() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this code (read once)."""
    global _CODE_HEADS
    if _CODE_HEADS is None:
        from alembic.script import ScriptDirectory

        _CODE_HEADS = frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())
    return _CODE_HEADS


def remember_code_heads(heads: frozenset[str]) -> None:
    """The heads as a process that imported alembic read them (``idp serve``'s initialising child)."""
    global _CODE_HEADS
    _CODE_HEADS = frozenset(heads)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def _private_file(path: Path, *, create: bool = True) -> None:
    """Mode 0600 for a SQLite file: it holds personal data (APPI §23, security control
    measures). SQLite creates the -wal and -shm files with the database file's mode, so
    creating the database 0600 keeps all three private; existing files are narrowed."""
    if create and not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if path.exists() and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def _sqlite_file(url: str) -> Path | None:
    """The database file of an on-disk SQLite URL."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        on_disk = _sqlite_file(url) is not None
        if on_disk:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL never corrupts; a power cut may lose the last commits (not a crash).
            # It halves the tail latency of the write lock under load (bench/README.md).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()
            if on_disk:  # the WAL and shared-memory files exist once WAL mode is on
                for suffix in ("", "-wal", "-shm"):
                    _private_file(Path(path + suffix), create=False)

        if on_disk:
            WriteGate(Path(path), SQLITE_BUSY_TIMEOUT_MS / 1000).attach(engine)
        return engine
    connect_args: dict[str, object] = {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": CONNECT_TIMEOUT,
                        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    # Sized to a worker: `idp serve` runs 4 request threads per process, each holding one
    # connection for its request; the overflow covers background work (back-channel logout).
    # No ping before each checkout (a round trip per request): a connection the server closed
    # (restart, failover) fails its request with a 503, and that disconnect invalidates every
    # pooled connection at once, so the next requests reconnect.
    return create_engine(url, pool_size=4, max_overflow=4, pool_timeout=POOL_TIMEOUT, connect_args=connect_args)
