"""Tamper-evident audit log: append-only entries, each committing to the previous one.

``entry_hash = SHA-256(prev_hash || canonical JSON of (seq, at, event, data))``. Editing,
deleting or reordering any entry breaks the chain from that entry on, which
``idp audit verify`` reports. Entries are written in the same transaction as the change
they record, so a change and its audit entry commit together or not at all.
Data holds identifiers only (opaque account id, certificate serial, client id), never
personal attributes and never an individual number.

A chain alone cannot show that its newest entries were cut off (or the whole chain
rewritten by someone with database access). So each committed entry also moves a
*head anchor* outside the database, ``audit.head`` in the keys folder: the highest
``seq`` committed and its hash, written after the commit under a file lock and only
ever forward, which keeps it right with several workers (and several instances sharing
the keys folder). ``verify`` then also requires that entry, with that hash, to exist.
Someone who can rewrite both the database and the keys folder defeats this; shipping
the head to an outside store (a log server, a WORM bucket) closes that gap.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from idp.files import write_atomically
from idp.ops import metrics
from idp.storage.models import AuditEntry, utcnow

GENESIS = "0" * 64
ANCHOR_FILE = "audit.head"
ANCHOR_DIR_KEY = "audit_anchor_dir"
"""``session.info`` key naming the folder of the head anchor (the CLI sets it; requests
use the app's keys folder)."""
_PENDING_KEY = "audit_pending_head"
_EVENTS_KEY = "audit_pending_events"
_LISTENING_KEY = "audit_anchor_listening"
_PG_LOCK_ID = 0x69645F6175646974  # pg_advisory_xact_lock key serialising writers on PostgreSQL

log = logging.getLogger(__name__)


def _digest(prev_hash: str, seq: int, at: str, event: str, data: dict[str, Any]) -> str:
    body = json.dumps({"seq": seq, "at": at, "event": event, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def record(session: Session, event: str, **data: Any) -> AuditEntry:
    """Append an entry in the caller's transaction.

    Writers are serialised until commit, so ``seq`` order is commit order: on PostgreSQL by
    a transaction-scoped advisory lock (a row lock on the tail would not stop two writers
    reading the same tail, and an empty log has no row to lock), on SQLite by taking the
    database-wide write lock before reading the tail (the driver starts the transaction
    only at the first write, so a plain read could see a tail another writer is extending).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_ID})
    elif dialect == "sqlite":  # a write statement (matching nothing) takes the write lock before the read
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 0 = 1"))
    tail = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq = tail.seq + 1 if tail else 1
    prev = tail.entry_hash if tail else GENESIS
    at = utcnow()
    clean = {k: v for k, v in data.items() if v is not None}
    entry = AuditEntry(seq=seq, at=at, event=event, data=clean, prev_hash=prev,
                       entry_hash=_digest(prev, seq, at.isoformat(), event, clean))
    session.add(entry)
    session.flush()
    _anchor_after_commit(session, entry)
    return entry


# --- the head anchor -----------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    seq: int
    entry_hash: str


def _anchor_dir(session: Session) -> Path | None:
    folder = session.info.get(ANCHOR_DIR_KEY)
    if folder is not None:
        return Path(folder)
    try:
        from flask import current_app, has_app_context
    except ImportError:  # pragma: no cover - flask is a dependency
        return None
    if has_app_context() and "idp" in current_app.extensions:
        return Path(current_app.extensions["idp"].settings.keys_dir)
    return None


def _anchor_after_commit(session: Session, entry: AuditEntry) -> None:
    session.info.setdefault(_EVENTS_KEY, []).append(entry.event)
    folder = _anchor_dir(session)
    if folder is not None:
        session.info[_PENDING_KEY] = (folder, Head(entry.seq, entry.entry_hash))
    if not session.info.get(_LISTENING_KEY):
        session.info[_LISTENING_KEY] = True
        sa_event.listen(session, "after_commit", _write_pending_head)
        sa_event.listen(session, "after_rollback", _forget_pending_head)


def _forget_pending_head(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_EVENTS_KEY, None)


def _write_pending_head(session: Session) -> None:
    for name in session.info.pop(_EVENTS_KEY, ()):
        metrics.audit_event(name)
    pending = session.info.pop(_PENDING_KEY, None)
    if pending is None:
        return
    folder, head = pending
    try:
        advance_head(folder, head)
    except OSError as exc:  # the commit stands; verify will report a stale anchor at worst
        log.warning("could not update the audit head anchor in %s: %s", folder, exc)


def read_head(folder: Path) -> Head | None:
    """The anchored head in ``folder``, or None when there is none yet."""
    try:
        raw = json.loads((Path(folder) / ANCHOR_FILE).read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the audit head anchor {Path(folder) / ANCHOR_FILE} is unreadable: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("seq"), int) or not isinstance(raw.get("hash"), str):
        raise ValueError(f"the audit head anchor {Path(folder) / ANCHOR_FILE} is malformed")
    return Head(raw["seq"], raw["hash"])


def advance_head(folder: Path, head: Head) -> None:
    """Move the anchor to ``head`` unless it already points at a later entry (atomic, locked)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{ANCHOR_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_head(folder)
        except ValueError:
            current = None
        if current is not None and current.seq >= head.seq:
            return
        write_atomically(folder / ANCHOR_FILE, json.dumps({"seq": head.seq, "hash": head.entry_hash}).encode(),
                         0o644)


# --- verification --------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def _name(entry: AuditEntry) -> str:
    return f"entry {entry.seq} ({entry.event} at {entry.at.isoformat()})"


def verify(session: Session, anchor: Head | None = None) -> ChainBreak | None:
    """The first entry where the chain does not hold, or None when it is intact.

    With ``anchor`` (read *before* calling, so entries committed meanwhile only make the log
    longer), the anchored entry must also be present with the anchored hash.
    """
    prev = GENESIS
    expected_seq = 1
    found_anchor = anchor is None
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        if entry.seq != expected_seq:
            return ChainBreak(expected_seq, f"entry {expected_seq} is missing (deleted; the next is {_name(entry)})")
        if entry.prev_hash != prev:
            return ChainBreak(entry.seq, f"{_name(entry)} does not commit to the previous entry "
                                         "(an entry before it was deleted, replaced or reordered)")
        if entry.entry_hash != _digest(prev, entry.seq, entry.at.isoformat(), entry.event, entry.data):
            return ChainBreak(entry.seq, f"{_name(entry)}: content does not match its hash (edited)")
        if anchor is not None and entry.seq == anchor.seq:
            if entry.entry_hash != anchor.entry_hash:
                return ChainBreak(entry.seq, f"{_name(entry)} is not the entry the head anchor recorded "
                                             "(the chain was rewritten)")
            found_anchor = True
        prev = entry.entry_hash
        expected_seq += 1
    if not found_anchor:
        assert anchor is not None
        return ChainBreak(expected_seq, f"entries {expected_seq} to {anchor.seq} are missing: the head anchor "
                                        f"records entry {anchor.seq} (the newest entries were deleted)")
    return None
