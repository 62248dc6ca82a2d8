"""An audit append is one SQL statement when the head this process last committed on its
chain is still the chain's newest entry (idp/audit.py, "One statement per entry"), and a
safe fallback when it is not: another process appended, the transaction or a savepoint
rolled back, the head was archived, another transaction holds the chain, a worker was
killed mid-transaction. Parallel appends from threads, processes and two instances leave a
log that `idp audit verify` accepts, with no gap and no duplicate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from idp import audit
from idp.storage.db import Database
from idp.storage.models import AuditCheckpoint, AuditEntry, Base, utcnow
from tests.support.balancer import Deployment
from tests.support.lifecycle import card, login, rp
from tests.support.rp import RelyingParty
from tests.support.server import PG_URL, command_env, fresh_database, idp_command, parallel

postgres_only = pytest.mark.skipif(not PG_URL, reason="PostgreSQL's chain locks")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with fresh_database(tmp_path / "db") as url:
        database = Database(url)
        Base.metadata.create_all(database.engine)
        yield database
        database.dispose()


@contextmanager
def counted(engine: Engine, on: Any = None) -> Iterator[list[str]]:
    """The SQL statements sent on ``engine`` (on connection ``on`` only, if given) meanwhile."""
    sent: list[str] = []

    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if on is None or conn is on:
            sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)


def append(db: Database, **data: Any) -> tuple[audit.AuditEntry, list[str]]:
    """One entry in a transaction of its own, and the statements the append sent."""
    with db.transaction() as session:
        session.connection()
        with counted(db.engine) as sent:
            entry = audit.record(session, "test.append", **data)
    return entry, sent


def intact(db: Database) -> int:
    with Session(db.engine) as session:
        result = audit.check(session)
    assert result.broken is None, result.broken
    return result.entries


@contextmanager
def writer(url: str) -> Iterator["Writer"]:
    """Another process appending to the same database (tests/support/audit_writer.py)."""
    process = subprocess.Popen([sys.executable, "-m", "tests.support.audit_writer", url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=command_env({}))
    try:
        yield Writer(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


class Writer:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def answer(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the writer process ended with {self.process.wait(10)}"
        return json.loads(line)

    def append(self, count: int = 1) -> list[list[int]]:
        self.send(f"append {count}")
        return self.answer()


# --- the fast path -------------------------------------------------------------------------------


def test_an_append_after_this_process_own_head_is_one_insert(db):
    first, _ = append(db)
    entry, sent = append(db)
    assert len(sent) == 1 and sent[0].startswith("INSERT INTO audit_log"), sent
    assert (entry.chain, entry.seq, entry.prev_hash) == (first.chain, first.seq + 1, first.entry_hash)
    with db.transaction() as session:  # a second entry of one transaction follows its first
        session.connection()
        with counted(db.engine) as sent:
            one = audit.record(session, "test.one")
            two = audit.record(session, "test.two")
    assert len(sent) == 2 and all(s.startswith("INSERT INTO audit_log") for s in sent), sent
    assert (two.chain, two.seq, two.prev_hash) == (one.chain, one.seq + 1, one.entry_hash)
    assert intact(db) == 4


def test_an_entry_that_rolled_back_never_becomes_the_head(db):
    first, _ = append(db)
    with pytest.raises(RuntimeError), db.transaction() as session:
        gone = audit.record(session, "test.rolled_back")
        raise RuntimeError("the step failed")
    assert gone.seq == first.seq + 1
    entry, sent = append(db)  # still after the committed head, in one statement
    assert len(sent) == 1, sent
    assert (entry.chain, entry.seq, entry.prev_hash) == (first.chain, first.seq + 1, first.entry_hash)
    assert intact(db) == 2


def test_a_released_savepoint_is_not_a_commit(db, tmp_path, monkeypatch):
    """Neither a remembered head nor an anchored one: the transaction around it rolls back."""
    monkeypatch.setattr(audit, "anchorer", audit._Anchorer(interval=3600, batch=1000))
    first, _ = append(db)
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.info[audit.ANCHOR_DIR_KEY] = tmp_path / "keys"
        audit.record(session, "test.outer")  # (pysqlite begins the transaction at a write, not a savepoint)
        with session.begin_nested():
            audit.record(session, "test.in_savepoint")
        raise RuntimeError("the step failed after its savepoint")
    audit.anchorer.flush()
    assert audit.read_anchor(tmp_path / "keys") is None
    entry, sent = append(db)
    assert len(sent) == 1 and entry.prev_hash == first.entry_hash, sent
    assert intact(db) == 2


def test_a_rolled_back_savepoint_takes_its_entries_out_of_the_head_and_the_anchor(db, tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "anchorer", audit._Anchorer(interval=3600, batch=1000))
    with db.transaction() as session:
        session.info[audit.ANCHOR_DIR_KEY] = tmp_path / "keys"
        kept = audit.record(session, "test.kept")
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.record(session, "test.undone")
            raise RuntimeError("the inner step failed")
        after = audit.record(session, "test.after")
    assert (after.seq, after.prev_hash) == (kept.seq + 1, kept.entry_hash)
    audit.anchorer.flush()
    anchor = audit.read_anchor(tmp_path / "keys")
    assert anchor == {after.chain: audit.Head(after.seq, after.entry_hash)}
    with Session(db.engine) as session:
        assert audit.check(session, anchor).broken is None
    entry, sent = append(db)
    assert len(sent) == 1 and entry.prev_hash == after.entry_hash


def test_an_archived_head_is_not_followed_and_the_chain_continues_from_its_checkpoint(db, tmp_path):
    for _ in range(3):
        append(db)
    with db.transaction() as session:
        assert audit.archive(session, utcnow() + timedelta(seconds=1), tmp_path / "archive.jsonl") == 3
        checkpoint = session.get(AuditCheckpoint, 0)
    assert checkpoint.seq == 3
    entry, _ = append(db)  # the head this process remembers is gone: a miss, so another chain
    assert entry.chain != 0 and (entry.seq, entry.prev_hash) == (1, audit.GENESIS)
    with writer(db.url) as other:  # a fresh process continues chain 0 from the checkpoint
        [[chain, seq, _]] = other.append()
    assert (chain, seq) == (0, 4)
    with db.engine.connect() as connection:
        assert connection.scalar(select(AuditEntry.prev_hash).where(AuditEntry.chain == 0,
                                                                    AuditEntry.seq == 4)) == checkpoint.entry_hash
    assert intact(db) == 2


def test_another_thread_committing_after_the_head_was_read(db, monkeypatch):
    """SQLite: a transaction whose first write is its entry reads the head before it has the
    write lock; another thread of the process may append meanwhile. The statement misses and
    is tried again after that thread's entry (no tail read, no move). PostgreSQL: the chain
    is held for the first transaction, so the other one takes another chain."""
    first, _ = append(db)
    real, others = audit._preferred, []

    def racing(appending: Any, postgres: bool) -> Any:
        chosen = real(appending, postgres)
        if not others:
            others.append(None)
            others[0] = append(db)[0]  # committed between reading the head and appending
        return chosen

    monkeypatch.setattr(audit, "_preferred", racing)
    with db.transaction() as session:
        with counted(db.engine, on=session.connection()) as sent:
            entry = audit.record(session, "test.raced")
    [other] = others
    if PG_URL:
        assert other.chain != first.chain and len(sent) == 1, sent
        assert (entry.chain, entry.seq) == (first.chain, first.seq + 1)
    else:
        assert len(sent) == 2 and all(s.startswith("INSERT INTO audit_log") for s in sent), sent
        assert (entry.chain, entry.seq, entry.prev_hash) == (first.chain, other.seq + 1, other.entry_hash)
    assert intact(db) == 3


# --- another process -------------------------------------------------------------------------------


def test_after_another_process_appended_the_append_falls_back_and_moves(db):
    first, _ = append(db)
    with writer(db.url) as other:
        [[chain, seq, _]] = other.append()
    assert (chain, seq) == (first.chain, first.seq + 1)  # a fresh process starts on chain 0 too
    moved, sent = append(db)
    assert sent[0].startswith("INSERT INTO audit_log") and any("ORDER BY audit_log.seq DESC" in s for s in sent), sent
    assert moved.chain != first.chain and moved.seq == 1
    again, sent = append(db)  # its new chain is its own: one statement again
    assert len(sent) == 1 and (again.chain, again.seq) == (moved.chain, 2), sent
    assert intact(db) == 4


def test_two_processes_taking_turns_settle_on_chains_of_their_own(db):
    rounds: list[tuple[list[int], list[int]]] = []
    with writer(db.url) as one, writer(db.url) as two:
        for _ in range(12):
            rounds.append((one.append()[0], two.append()[0]))
    settled = rounds[-6:]
    assert all(a[2] == 1 and b[2] == 1 for a, b in settled), rounds
    assert {a[0] for a, _ in settled}.isdisjoint({b[0] for _, b in settled}), rounds
    assert intact(db) == 24


def test_parallel_appends_from_threads_and_processes(db):
    processes, threads, count = 3, 4, 20
    with writer(db.url) as a, writer(db.url) as b, writer(db.url) as c:
        writers = [a, b, c]
        for w in writers:
            w.send(f"burst {threads} {count}")
            assert w.answer() == "ready"
        for w in writers:
            w.send("go")
        bursts = [w.answer() for w in writers]
    written = Counter((p, t, i) for p, burst in enumerate(bursts) for _, _, t, i in burst["entries"])
    assert len(written) == processes * threads * count and set(written.values()) == {1}
    places = Counter((chain, seq) for burst in bursts for chain, seq, _, _ in burst["entries"])
    assert set(places.values()) == {1}
    assert intact(db) == processes * threads * count  # every chain whole: no gap, no duplicate


def test_a_writer_killed_mid_transaction_leaves_a_log_that_verifies(db):
    first, _ = append(db)
    with writer(db.url) as other:
        other.send("hold")
        chain, seq = other.answer()  # appended in a transaction it never ends
        os.kill(other.process.pid, signal.SIGKILL)
        other.process.wait(10)
    entry, _ = append(db)
    with writer(db.url) as third:
        third.append(2)
    assert intact(db) == 4
    with db.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(AuditEntry.__table__)
                                 .where(AuditEntry.event == "test.held")) == 0
    assert (chain, seq) == (first.chain, first.seq + 1)  # the place its entry took, freed by the kill


def test_a_forked_worker_starts_knowing_no_head(db):
    append(db)
    assert audit._KNOWN
    pid = os.fork()
    if pid == 0:  # the child: nothing inherited, and it appends correctly
        code = 1
        try:
            inherited = bool(audit._KNOWN)
            db.engine.dispose(close=False)  # the parent's connections stay the parent's
            append(db)
            code = 2 if inherited else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    append(db)
    assert intact(db) == 3


# --- PostgreSQL: the chain lock inside the statement -------------------------------------------


@postgres_only
def test_a_chain_another_transaction_holds_is_not_waited_for(db):
    first, _ = append(db)
    with db.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k, :c)"), {"k": audit._PG_LOCK_CLASS, "c": first.chain})
        started = time.monotonic()
        with db.transaction() as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            with counted(db.engine) as sent:
                entry = audit.record(session, "test.elsewhere")
        assert time.monotonic() - started < 2
        holder.rollback()
    assert entry.chain != first.chain and entry.seq == 1
    assert "pg_try_advisory_xact_lock" in sent[0] and sent[0].startswith("INSERT"), sent
    again, sent = append(db)
    assert len(sent) == 1 and (again.chain, again.seq) == (entry.chain, 2)
    assert intact(db) == 3


@postgres_only
def test_parallel_transactions_of_one_process_take_chains_of_their_own(db):
    """Threads of one process share its heads, but no two open transactions try one chain."""
    append(db)
    inside = threading.Barrier(3, timeout=20)
    chains: list[int] = []

    def run() -> None:
        with db.transaction() as session:
            chains.append(audit.record(session, "test.thread").chain)
            inside.wait()

    workers = [threading.Thread(target=run) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert len(set(chains)) == 3, chains
    assert intact(db) == 4


# --- served: workers and instances ---------------------------------------------------------------


def test_parallel_requests_on_workers_and_instances_leave_one_verifiable_log(spread_deployment):
    """Registrations and logins at once, on two workers (and, behind the balancer, two
    instances): each has its entry, once, and `idp audit verify` accepts the log."""
    server = spread_deployment.front if isinstance(spread_deployment, Deployment) else spread_deployment
    engine = server.engine()

    def count(event: str) -> int:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(AuditEntry.__table__)
                                     .where(AuditEntry.event == event))

    client = rp(server)
    devices = [server.wallet().enroll(card(server)) for _ in range(4)]
    registered, logged_in = count("client.registered"), count("login.success")
    for _ in range(2):
        parallel(lambda i: RelyingParty.register(server.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{i}",
                                                 rp_category="municipal"), 12)
        parallel(lambda i: login(server, client, devices[i]), len(devices))
    assert (count("client.registered"), count("login.success")) == (registered + 24, logged_in + 8)
    verified = subprocess.run(idp_command("audit", "verify"), env=command_env(server.env), capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
