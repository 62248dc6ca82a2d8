"""Tamper-evident audit log: append-only entries, each committing to the previous one.

``entry_hash = SHA-256(prev_hash || canonical JSON of (seq, at, event, data))``. Editing,
deleting or reordering any entry breaks the chain from that entry on, which
``idp audit verify`` reports. Entries are written in the same transaction as the change
they record, so a change and its audit entry commit together or not at all.
Data holds identifiers only (opaque account id, certificate serial, client id), never
personal attributes and never an individual number.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.storage.models import AuditEntry, utcnow

GENESIS = "0" * 64


def _digest(prev_hash: str, seq: int, at: str, event: str, data: dict[str, Any]) -> str:
    body = json.dumps({"seq": seq, "at": at, "event": event, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def record(session: Session, event: str, **data: Any) -> AuditEntry:
    """Append an entry. The row lock on the tail serialises writers on PostgreSQL; on
    SQLite the database-wide write lock does."""
    tail = session.scalars(
        select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1).with_for_update()
    ).first()
    seq = tail.seq + 1 if tail else 1
    prev = tail.entry_hash if tail else GENESIS
    at = utcnow()
    clean = {k: v for k, v in data.items() if v is not None}
    entry = AuditEntry(seq=seq, at=at, event=event, data=clean, prev_hash=prev,
                       entry_hash=_digest(prev, seq, at.isoformat(), event, clean))
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify(session: Session) -> ChainBreak | None:
    """The first entry where the chain does not hold, or None when it is intact."""
    prev = GENESIS
    expected_seq = 1
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        if entry.seq != expected_seq:
            return ChainBreak(expected_seq, f"entry {expected_seq} is missing (next is {entry.seq})")
        if entry.prev_hash != prev:
            return ChainBreak(entry.seq, "does not commit to the previous entry (deleted or reordered)")
        if entry.entry_hash != _digest(prev, entry.seq, entry.at.isoformat(), entry.event, entry.data):
            return ChainBreak(entry.seq, "content does not match its hash (edited)")
        prev = entry.entry_hash
        expected_seq += 1
    return None
