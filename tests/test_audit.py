"""The hash-chained audit log: every tampering is found, at the first bad entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, delete, update
from sqlalchemy.orm import Session

from idp import audit
from idp.storage.models import AuditEntry, Base


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        for n in range(1, 5):
            audit.record(s, "test.event", n=n, account="acct-1", skipped=None, note="個人情報なし")
        s.commit()
        yield s
    engine.dispose()


def reread(s: Session) -> audit.ChainBreak | None:
    s.commit()
    s.expire_all()
    return audit.verify(s)


def test_entries_are_chained(session: Session) -> None:
    entries = session.query(AuditEntry).order_by(AuditEntry.seq).all()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:]))
    assert entries[0].data == {"n": 1, "account": "acct-1", "note": "個人情報なし"}  # None dropped
    assert reread(session) is None


def test_empty_log_is_intact() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        assert audit.verify(s) is None


def test_edited_data_is_found(session: Session) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(data={"n": 99, "account": "acct-1"}))
    broken = reread(session)
    assert broken is not None and broken.seq == 3 and "edited" in broken.reason


def test_edited_event_is_found(session: Session) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(event="other.event"))
    assert reread(session).seq == 2


def test_edit_with_recomputed_hash_breaks_the_next_link(session: Session) -> None:
    entry = session.get(AuditEntry, (0, 2))
    entry.data = {"n": 2, "account": "acct-2"}
    entry.entry_hash = audit._digest(entry.prev_hash, 2, entry.at.isoformat(), entry.event, entry.data)
    assert reread(session).seq == 3


def test_deleted_entry_is_found(session: Session) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq == 2))
    broken = reread(session)
    assert broken is not None and broken.seq == 2 and "missing" in broken.reason


def test_deleted_first_entry_is_found(session: Session) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq == 1))
    assert reread(session).seq == 1


def test_swapped_pair_is_found(session: Session) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(seq=-2))
    session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=2))
    session.execute(update(AuditEntry).where(AuditEntry.seq == -2).values(seq=3))
    broken = reread(session)
    assert broken is not None and broken.seq == 2


def test_recording_continues_the_chain(session: Session) -> None:
    entry = audit.record(session, "later", n=5)
    assert entry.seq == 5
    assert entry.prev_hash == session.get(AuditEntry, (0, 4)).entry_hash
    assert reread(session) is None
