"""The audit log at scale (README "Audit log"): several chains so writers never queue on one
lock, a head anchor written in batches (not per commit), verification streaming in constant
memory, and `idp audit archive` exporting a verified segment before pruning it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from idp import audit
from idp.storage.models import AuditCheckpoint, AuditEntry, Base, utcnow
from tests.conftest import PG_URL
from tests.support.lifecycle import run_cli
from tests.support.server import fresh_database


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with fresh_database(tmp_path / "db") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()


def _bulk(engine: Engine, count: int, chain: int = 0) -> None:
    """``count`` valid entries appended to ``chain`` without the ORM (fast set-up)."""
    rows, prev, at = [], audit.GENESIS, utcnow()
    for seq in range(1, count + 1):
        data = {"account": f"acct-{seq % 97}", "serial": f"{seq:040x}"}
        digest = audit._digest(prev, seq, at.isoformat(), "test.bulk", data)
        rows.append({"chain": chain, "seq": seq, "at": at, "event": "test.bulk", "data": data,
                     "prev_hash": prev, "entry_hash": digest})
        prev = digest
    with engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(insert(AuditEntry.__table__), rows[start:start + 5000])


@pytest.mark.skipif(not PG_URL, reason="SQLite has one writer at a time by design: one chain")
def test_concurrent_transactions_append_at_once_on_separate_chains(engine):
    writers = 4
    inside = threading.Barrier(writers, timeout=20)  # a global lock would never let all four in
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with Session(engine) as session, session.begin():
                audit.record(session, "test.parallel", writer=n)
                inside.wait()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(engine) as session:
        chains = session.scalars(select(AuditEntry.chain)).all()
        assert sorted(chains) == list(range(writers))  # the first free chains, one each
        assert audit.verify(session) is None


def test_a_quiet_system_writes_one_chain_and_anchors_in_batches(engine, tmp_path, monkeypatch):
    writes: list[Path] = []
    real = audit.write_atomically
    monkeypatch.setattr(audit, "write_atomically", lambda path, *a: (writes.append(path), real(path, *a)))
    monkeypatch.setattr(audit, "anchorer", audit._Anchorer(interval=3600, batch=25))
    for n in range(60):
        with Session(engine) as session, session.begin():
            session.info[audit.ANCHOR_DIR_KEY] = tmp_path
            audit.record(session, "test.quiet", n=n)
    audit.anchorer.flush()  # waits for the anchor thread's batch in progress, if any
    # the first commit, then one per 25 entries (batches due while the thread was still writing
    # go out together), and what the last flush found: not one per commit
    assert 1 <= len(writes) <= 4
    anchor = audit.read_anchor(tmp_path)
    assert list(anchor) == [0] and anchor[0].seq == 60
    with Session(engine) as session:
        assert audit.verify(session, anchor) is None


def _peak_verify_memory(engine: Engine) -> int:
    with Session(engine) as session:
        tracemalloc.start()
        try:
            result = audit.check(session)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.broken is None
    return peak


def test_verify_streams_in_constant_memory(engine):
    _bulk(engine, 300)
    small = _peak_verify_memory(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log"))
    _bulk(engine, 3_000)
    large = _peak_verify_memory(engine)
    assert large < small * 3 + 256 * 1024, (small, large)  # ten times the entries, not ten times the memory


def test_archive_exports_a_verified_segment_then_the_chain_continues(engine, tmp_path):
    _bulk(engine, 30)
    out = tmp_path / "audit-2026.jsonl"
    with Session(engine) as session, session.begin():
        assert audit.archive(session, utcnow() + timedelta(seconds=1), out) == 30
    with Session(engine) as session, session.begin():
        assert session.scalar(select(AuditEntry.seq)) is None
        checkpoint = session.get(AuditCheckpoint, 0)
        assert checkpoint.seq == 30
        entry = audit.record(session, "test.after_archive")
        assert entry.seq == 31 and entry.prev_hash == checkpoint.entry_hash
        head = audit.Head(31, entry.entry_hash)
    with Session(engine) as session:
        assert audit.verify(session, {0: head}) is None
        assert audit.verify(session, {0: audit.Head(12, "anything archived")}) is None  # behind the checkpoint
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"checkpoint": {"chain": 0, "seq": 0, "hash": audit.GENESIS}}
    prev = audit.GENESIS  # the exported segment verifies on its own
    for line in lines[1:]:
        assert line["prev_hash"] == prev
        assert line["entry_hash"] == audit._digest(prev, line["seq"], line["at"], line["event"], line["data"])
        prev = line["entry_hash"]
    assert len(lines) == 31 and oct(out.stat().st_mode & 0o777) == "0o600"


def test_deleting_after_a_checkpoint_is_still_found(engine, tmp_path):
    _bulk(engine, 10)
    with Session(engine) as session, session.begin():
        audit.archive(session, utcnow() + timedelta(seconds=1), tmp_path / "a.jsonl")
        for n in range(3):
            audit.record(session, "test.more", n=n)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE seq = 11"))
    with Session(engine) as session:
        broken = audit.verify(session)
    assert broken is not None and broken.seq == 11 and "missing" in broken.reason


def test_archive_command_refuses_a_broken_log_and_keeps_it(idp, monkeypatch, tmp_path):
    engine = idp.services().db.engine
    with idp.services().db.transaction() as session:
        audit.record(session, "test.before_archive")
    audit.flush_anchor()
    with engine.begin() as connection:
        first = connection.execute(select(AuditEntry.chain, AuditEntry.seq, AuditEntry.data)
                                   .order_by(AuditEntry.chain, AuditEntry.seq).limit(1)).first()
        connection.execute(update(AuditEntry.__table__).where(AuditEntry.chain == first.chain,
                                                              AuditEntry.seq == first.seq)
                           .values(data={"edited": True}))
    out = tmp_path / "never.jsonl"
    try:
        result = run_cli(idp, monkeypatch, "audit", "archive", "--before", "2999-01-01", "--out", str(out))
        assert "broken" in result.error_line and not out.exists()
    finally:
        with engine.begin() as connection:
            connection.execute(update(AuditEntry.__table__).where(AuditEntry.chain == first.chain,
                                                                  AuditEntry.seq == first.seq)
                               .values(data=first.data))
    nothing = run_cli(idp, monkeypatch, "audit", "archive", "--before", "2000-01-01", "--out", str(out))
    assert nothing.code == 0 and nothing.out.strip() == "nothing to archive"
    assert run_cli(idp, monkeypatch, "audit", "archive", "--before", "someday", "--out", str(out)).code == 1


def _chain_zero_head(engine: Engine, seq: int, chain: int = 0) -> str:
    with engine.connect() as connection:
        return connection.scalar(select(AuditEntry.entry_hash).where(AuditEntry.chain == chain,
                                                                     AuditEntry.seq == seq))


def test_each_keys_folder_anchors_the_entries_of_every_instance(engine, tmp_path):
    """Issue 15 saw each keys folder anchor only its own instance's entries: an instance
    anchoring its commit also takes every other chain's database head."""
    _bulk(engine, 5, chain=0)  # this instance's chain
    _bulk(engine, 7, chain=3)  # another instance's, with its own keys folder
    own = audit.Head(5, _chain_zero_head(engine, 5))
    audit.advance(tmp_path / "keys-a", {0: own}, engine)
    assert audit.read_anchor(tmp_path / "keys-a") == {0: own, 3: audit.Head(7, _chain_zero_head(engine, 7, chain=3))}


def test_the_one_line_anchor_of_a_single_chain_log_is_read_as_chain_zero(engine, tmp_path):
    """A keys folder from before several chains holds ``{"seq", "hash"}``; migration 0014
    made that log chain 0, so `idp audit verify` reads the old line as chain 0's head, and
    the next anchor write keeps it (never starts the anchor afresh)."""
    _bulk(engine, 20)
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / audit.ANCHOR_FILE).write_text(json.dumps({"seq": 20, "hash": _chain_zero_head(engine, 20)}))
    anchor = audit.read_anchor(folder)
    assert anchor == {0: audit.Head(20, _chain_zero_head(engine, 20))}
    with Session(engine) as session:
        assert audit.check(session, anchor).broken is None
    (folder / audit.ANCHOR_FILE).write_text(json.dumps({"seq": 24, "hash": "f" * 64}))  # newest entries gone
    with Session(engine) as session:
        broken = audit.check(session, audit.read_anchor(folder)).broken
    assert broken is not None and "missing" in broken.reason
    (folder / audit.ANCHOR_FILE).write_text(json.dumps({"seq": 20, "hash": _chain_zero_head(engine, 20)}))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE seq > 15"))
    audit.advance(folder, {}, engine)  # a truncated chain 0 must not pull the old anchor back
    assert audit.read_anchor(folder) == {0: audit.Head(20, anchor[0].entry_hash)}
    with Session(engine) as session:
        assert audit.check(session, audit.read_anchor(folder)).broken is not None


def test_audit_verify_command_reads_the_old_anchor_line(idp, monkeypatch):
    path = Path(idp.settings.keys_dir) / audit.ANCHOR_FILE
    saved = path.read_bytes() if path.exists() else None
    try:
        with idp.services().db.transaction() as session:
            entry = audit.record(session, "test.old_anchor")  # a quiet system writes chain 0
        assert entry.chain == 0
        path.write_text(json.dumps({"seq": entry.seq, "hash": entry.entry_hash}))
        result = run_cli(idp, monkeypatch, "audit", "verify")
        assert result.code == 0 and f"head anchor at entry {entry.seq}" in result.out, result
    finally:
        if saved is not None:
            path.write_bytes(saved)


def test_the_anchor_is_written_by_its_own_thread_never_by_a_committing_request(engine, tmp_path, monkeypatch):
    """A due batch wakes the anchor thread: its fsync and head reads never add to a request."""
    writers: list[str] = []
    real = audit.advance
    monkeypatch.setattr(audit, "advance", lambda *args: (writers.append(threading.current_thread().name),
                                                         real(*args))[1])
    monkeypatch.setattr(audit, "anchorer", audit._Anchorer(interval=3600, batch=1))
    for n in range(5):  # every commit makes a batch due
        with Session(engine) as session, session.begin():
            session.info[audit.ANCHOR_DIR_KEY] = tmp_path
            audit.record(session, "test.thread", n=n)
    deadline = time.monotonic() + 10
    while audit.read_anchor(tmp_path) != {0: _head(engine)} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert audit.read_anchor(tmp_path) == {0: _head(engine)}
    assert writers and set(writers) == {"audit-anchor"}, writers


def _head(engine: Engine) -> audit.Head:
    with Session(engine) as session:
        seq, entry_hash = session.execute(select(AuditEntry.seq, AuditEntry.entry_hash)
                                          .order_by(AuditEntry.seq.desc()).limit(1)).one()
    return audit.Head(seq, entry_hash)


def test_a_worker_forked_while_the_anchor_thread_writes_can_still_anchor(engine, tmp_path):
    """gunicorn forks workers at any time; a lock the parent's anchor thread held at that
    moment would stay held in the child for ever (no thread there releases it)."""
    with audit.anchorer._writing, audit.anchorer._lock:  # the parent's thread, mid-write
        pid = os.fork()
        if pid == 0:  # the child: anchors its own entry, within the deadline
            code = 1
            try:
                signal.alarm(20)
                engine.dispose(close=False)  # the parent's connections stay the parent's
                with Session(engine) as session, session.begin():
                    session.info[audit.ANCHOR_DIR_KEY] = tmp_path
                    audit.record(session, "test.forked")
                audit.flush_anchor()
                code = 0 if audit.read_anchor(tmp_path) == {0: _head(engine)} else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
