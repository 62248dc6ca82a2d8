"""Tamper-evident audit log: append-only hash chains, each entry committing to the previous one.

``entry_hash = SHA-256(prev_hash || canonical JSON of (seq, at, event, data))``. Editing,
deleting or reordering any entry breaks its chain from that entry on, which
``idp audit verify`` reports. Entries are written in the same transaction as the change
they record, so a change and its audit entry commit together or not at all.
Data holds identifiers only (opaque account id, certificate serial, client id), never
personal attributes and never an individual number.

**Several chains, no global lock.** One chain needs one writer at a time until commit, which
serialised every instance on one lock. The log is therefore ``CHAINS`` independent chains
(``chain`` column, ``seq`` counting 1, 2, 3… within each). On PostgreSQL a writer takes the
first chain whose transaction-scoped advisory lock is free (``pg_try_advisory_xact_lock``,
never waiting), so up to ``CHAINS`` transactions append at once and a quiet system writes
chain 0 only; only when every chain is busy does it wait for one. Within a chain ``seq``
order is commit order. SQLite has one writer at a time anyway: chain 0, under its write lock.

**Head anchor, batched.** A chain alone cannot show that its newest entries were cut off
(or rewritten by someone with database access). So the head of every chain (highest
``seq`` and its hash) is also anchored outside the database, in ``audit.head`` in the keys
folder, only ever forward; ``verify`` requires each anchored entry to exist with that hash.
The anchor is written at most once per ``ANCHOR_INTERVAL`` seconds or per ``ANCHOR_BATCH``
entries per process (and at exit), not per commit: one atomic file write (with fsync) per
batch instead of one per login. Each write also takes in the heads of the chains other
instances wrote (read from the database, advanced only if the entry the anchor recorded is
still there unchanged), so every keys folder anchors the whole log. What a crash can lose:
nothing in the database; the anchor may lag by up to ``ANCHOR_INTERVAL`` seconds, and a
deletion of just those newest entries would go unnoticed. Someone who can rewrite both the
database and the keys folder defeats the anchor; shipping it to an outside store (a log
server, a WORM bucket) closes that gap.

**Archive.** ``idp audit archive`` verifies the log, writes the entries older than a date to
a JSON-lines file, then deletes them and records each chain's last archived entry as a
checkpoint; ``verify`` continues each chain from its checkpoint.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from idp.files import write_atomically
from idp.ops import metrics
from idp.storage.models import AuditCheckpoint, AuditEntry, utcnow

GENESIS = "0" * 64
CHAINS = 8
ANCHOR_FILE = "audit.head"
ANCHOR_INTERVAL = 1.0
ANCHOR_BATCH = 100
ANCHOR_DIR_KEY = "audit_anchor_dir"
"""``session.info`` key naming the folder of the head anchor (the CLI sets it; requests
use the app's keys folder)."""
_CHAIN_KEY = "audit_chain"
_PENDING_KEY = "audit_pending"
_LISTENING_KEY = "audit_listening"
_PG_LOCK_CLASS = 0x69646175  # pg advisory lock key 1 ("idau"); key 2 is the chain number
VERIFY_BATCH = 500

log = logging.getLogger(__name__)


def _digest(prev_hash: str, seq: int, at: str, event: str, data: dict[str, Any]) -> str:
    body = json.dumps({"seq": seq, "at": at, "event": event, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Head:
    seq: int
    entry_hash: str


Anchor = dict[int, Head]
"""The anchored head of each chain."""


# --- appending --------------------------------------------------------------------------


def _take_chain(session: Session) -> int:
    """The chain this transaction appends to, locked until it ends (see the module doc)."""
    chain = session.info.get(_CHAIN_KEY)
    if chain is not None:
        return chain
    dialect = session.get_bind().dialect.name
    chain = 0
    if dialect == "postgresql":
        try_lock = text("SELECT pg_try_advisory_xact_lock(:k, :c)")
        free = next((c for c in range(CHAINS)
                     if session.scalar(try_lock, {"k": _PG_LOCK_CLASS, "c": c})), None)
        if free is None:  # every chain busy: queue on one, spreading the waiters
            free = random.randrange(CHAINS)
            session.execute(text("SELECT pg_advisory_xact_lock(:k, :c)"), {"k": _PG_LOCK_CLASS, "c": free})
        chain = free
    elif dialect == "sqlite" and not _holds_sqlite_write_lock(session):
        # a write statement (matching nothing) takes the write lock before the read
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 0 = 1"))
    session.info[_CHAIN_KEY] = chain
    _listen(session)
    return chain


def _holds_sqlite_write_lock(session: Session) -> bool:
    """Whether this SQLite transaction has already written (so it holds the database's one
    write lock, and the tail it reads next cannot move under it). The driver opens a
    transaction only before a write statement, so an open one has written."""
    return bool(session.connection().connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


def record(session: Session, event: str, **data: Any) -> AuditEntry:
    """Append an entry in the caller's transaction (on the chain it holds, see the module doc).

    The entry is written at once, as a plain insert (not through the session's unit of
    work): its ``seq`` is taken while this transaction holds the chain. The returned
    object is a copy of what was written, not attached to the session."""
    chain = _take_chain(session)
    connection = session.connection()
    tail = connection.execute(_TAIL, {"chain": chain}).first()
    if tail is None:
        checkpoint = session.get(AuditCheckpoint, chain)
        tail = (checkpoint.seq, checkpoint.entry_hash) if checkpoint else (0, GENESIS)
    seq, prev = tail[0] + 1, tail[1]
    at = utcnow()
    clean = {k: v for k, v in data.items() if v is not None}
    values = {"chain": chain, "seq": seq, "at": at, "event": event, "data": clean, "prev_hash": prev,
              "entry_hash": _digest(prev, seq, at.isoformat(), event, clean)}
    connection.execute(_APPEND, values)
    session.info.setdefault(_PENDING_KEY, []).append((chain, Head(seq, values["entry_hash"]), event))
    return AuditEntry(**values)


_TAIL = (select(AuditEntry.seq, AuditEntry.entry_hash).where(AuditEntry.chain == bindparam("chain"))
         .order_by(AuditEntry.seq.desc()).limit(1))
_APPEND = insert(AuditEntry.__table__)


def _listen(session: Session) -> None:
    if not session.info.get(_LISTENING_KEY):
        session.info[_LISTENING_KEY] = True
        sa_event.listen(session, "after_commit", _committed)
        sa_event.listen(session, "after_rollback", _rolled_back)


def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_CHAIN_KEY, None)


def _committed(session: Session) -> None:
    session.info.pop(_CHAIN_KEY, None)
    pending = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    for _, _, event in pending:
        metrics.audit_event(event)
    folder = _anchor_dir(session)
    if folder is not None:
        heads: Anchor = {}
        for chain, head, _ in pending:
            heads[chain] = max(heads.get(chain, head), head, key=lambda h: h.seq)
        anchorer.add(folder, heads, session.get_bind().engine)


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


# --- the batched head anchor -------------------------------------------------------------


@dataclass
class _Anchorer:
    """Collects committed heads per keys folder and writes them in batches (module doc)."""

    interval: float = ANCHOR_INTERVAL
    batch: int = ANCHOR_BATCH
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[Path, tuple[Anchor, Engine]] = field(default_factory=dict)
    _count: int = 0
    _last: float = float("-inf")  # the first commit after start is anchored at once
    _pid: int = 0

    def add(self, folder: Path, heads: Anchor, engine: Engine) -> None:
        with self._lock:
            known, _ = self._pending.get(folder, ({}, engine))
            for chain, head in heads.items():
                if chain not in known or known[chain].seq < head.seq:
                    known[chain] = head
            self._pending[folder] = (known, engine)
            self._count += len(heads)
            due = self._count >= self.batch or time.monotonic() - self._last >= self.interval
            self._ensure_timer()
        if due:
            self.flush()

    def _ensure_timer(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()  # a forked worker starts its own timer (threads do not survive fork)
        threading.Thread(target=self._tick, name="audit-anchor", daemon=True).start()

    def _tick(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        """Write every pending head now (also called at exit and by the CLI)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._count = 0
            self._last = time.monotonic()
        for folder, (heads, engine) in pending.items():
            try:
                advance(folder, heads, engine)
            except (OSError, ValueError) as exc:  # the commits stand; verify reports a stale anchor at worst
                log.warning("could not update the audit head anchor in %s: %s", folder, exc)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the timer thread
                log.warning("could not read the audit chain heads for the anchor in %s: %s", folder,
                            type(exc).__name__)
                try:
                    advance(folder, heads, None)
                except (OSError, ValueError) as again:
                    log.warning("could not update the audit head anchor in %s: %s", folder, again)


anchorer = _Anchorer()
atexit.register(anchorer.flush)


def flush_anchor() -> None:
    anchorer.flush()


def read_anchor(folder: Path) -> Anchor | None:
    """The anchored chain heads in ``folder``, or None when there is none yet.

    A keys folder from before several chains holds the one-line anchor of the single log,
    ``{"seq": N, "hash": "..."}``: that log became chain 0 unchanged (migration 0014), so
    it anchors chain 0 until the next write replaces it with the form of every chain.
    """
    path = Path(folder) / ANCHOR_FILE
    try:
        raw = json.loads(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the audit head anchor {path} is unreadable: {exc}") from None
    if isinstance(raw, dict) and set(raw) == {"seq", "hash"}:
        raw = {"chains": {"0": raw}}
    chains = raw.get("chains") if isinstance(raw, dict) else None
    if not isinstance(chains, dict):
        raise ValueError(f"the audit head anchor {path} is malformed")
    anchor: Anchor = {}
    for chain, head in chains.items():
        if not (chain.isdigit() and isinstance(head, dict) and isinstance(head.get("seq"), int)
                and isinstance(head.get("hash"), str)):
            raise ValueError(f"the audit head anchor {path} is malformed")
        anchor[int(chain)] = Head(head["seq"], head["hash"])
    return anchor


def _database_heads(engine: Engine) -> Anchor:
    heads: Anchor = {}
    with engine.connect() as connection:
        for chain in range(CHAINS):
            row = connection.execute(select(AuditEntry.seq, AuditEntry.entry_hash).where(AuditEntry.chain == chain)
                                     .order_by(AuditEntry.seq.desc()).limit(1)).first()
            if row is not None:
                heads[chain] = Head(row[0], row[1])
    return heads


def _still_there(engine: Engine, chain: int, head: Head) -> bool:
    with engine.connect() as connection:
        found = connection.scalar(select(AuditEntry.entry_hash).where(AuditEntry.chain == chain,
                                                                      AuditEntry.seq == head.seq))
        if found is None:  # archived: the checkpoint then lies at or beyond it
            checkpoint = connection.scalar(select(AuditCheckpoint.seq).where(AuditCheckpoint.chain == chain))
            return checkpoint is not None and checkpoint >= head.seq
    return found == head.entry_hash


def advance(folder: Path, heads: Anchor, engine: Engine | None) -> None:
    """Move the anchor forward to ``heads`` and (with ``engine``) to every chain's database head.

    A chain's database head is taken only when the entry the anchor already records for
    it is still there unchanged: a truncated or rewritten chain must not pull the anchor
    along. Atomic and under a file lock, so the workers and instances sharing a keys
    folder only ever move it forward.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{ANCHOR_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_anchor(folder) or {}
        except ValueError:
            current = {}
        merged = dict(current)
        for chain, head in heads.items():
            if chain not in merged or merged[chain].seq < head.seq:
                merged[chain] = head
        if engine is not None:
            for chain, head in _database_heads(engine).items():
                known = merged.get(chain)
                if known is not None and known.seq >= head.seq:
                    continue
                if known is not None and not _still_there(engine, chain, known):
                    log.error("audit chain %d no longer holds anchored entry %d: run `idp audit verify`",
                              chain, known.seq)
                    continue
                merged[chain] = head
        if merged == current:
            return
        body = {"chains": {str(c): {"seq": h.seq, "hash": h.entry_hash} for c, h in sorted(merged.items())}}
        write_atomically(folder / ANCHOR_FILE, json.dumps(body).encode(), 0o644)


# --- verification --------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str
    chain: int = 0


@dataclass(frozen=True)
class Verification:
    broken: ChainBreak | None
    entries: int
    chains: int


def _name(chain: int, seq: int, event: str, at: datetime) -> str:
    where = f" of chain {chain}" if chain else ""
    return f"entry {seq}{where} ({event} at {at.isoformat()})"


def _rows(session: Session) -> Iterator[Any]:
    """Every entry in (chain, seq) order, streamed in batches: memory stays constant."""
    table = AuditEntry.__table__
    query = select(table.c.chain, table.c.seq, table.c.at, table.c.event, table.c.data, table.c.prev_hash,
                   table.c.entry_hash).order_by(table.c.chain, table.c.seq)
    yield from session.connection().execute(query.execution_options(stream_results=True, yield_per=VERIFY_BATCH))


def check(session: Session, anchor: Anchor | None = None) -> Verification:
    """Walk every chain once, from its checkpoint (if archived) to its head.

    With ``anchor`` (read *before* calling, so entries committed meanwhile only make the log
    longer), each anchored entry must also be present with the anchored hash.
    """
    checkpoints = {c.chain: c for c in session.scalars(select(AuditCheckpoint))}
    anchor = dict(anchor or {})
    entries = 0
    seen: set[int] = set()
    chain, prev, expected = -1, GENESIS, 1

    def finish(chain: int, expected: int) -> ChainBreak | None:
        head = anchor.pop(chain, None)
        if head is not None and head.seq >= expected:
            return ChainBreak(expected, f"entries {expected} to {head.seq}{' of chain ' + str(chain) if chain else ''}"
                                        f" are missing: the head anchor records entry {head.seq} "
                                        "(the newest entries were deleted)", chain)
        return None

    for row in _rows(session):
        if row.chain != chain:
            if chain >= 0 and (broken := finish(chain, expected)):
                return Verification(broken, entries, len(seen))
            chain = row.chain
            seen.add(chain)
            start = checkpoints.get(chain)
            prev, expected = (start.entry_hash, start.seq + 1) if start else (GENESIS, 1)
            if anchor.get(chain) is not None and start is not None and anchor[chain].seq <= start.seq:
                anchor.pop(chain)
        name = _name(row.chain, row.seq, row.event, row.at)
        if row.seq != expected:
            return Verification(ChainBreak(expected, f"entry {expected}{' of chain ' + str(chain) if chain else ''} "
                                                     f"is missing (deleted; the next is {name})", chain),
                                entries, len(seen))
        if row.prev_hash != prev:
            return Verification(ChainBreak(row.seq, f"{name} does not commit to the previous entry "
                                                    "(an entry before it was deleted, replaced or reordered)", chain),
                                entries, len(seen))
        if row.entry_hash != _digest(prev, row.seq, row.at.isoformat(), row.event, row.data):
            return Verification(ChainBreak(row.seq, f"{name}: content does not match its hash (edited)", chain),
                                entries, len(seen))
        head = anchor.get(chain)
        if head is not None and row.seq == head.seq:
            if row.entry_hash != head.entry_hash:
                return Verification(ChainBreak(row.seq, f"{name} is not the entry the head anchor recorded "
                                                        "(the chain was rewritten)", chain), entries, len(seen))
            anchor.pop(chain)
        prev = row.entry_hash
        expected += 1
        entries += 1
    if chain >= 0 and (broken := finish(chain, expected)):
        return Verification(broken, entries, len(seen))
    for lost, head in sorted(anchor.items()):  # anchored chains with no entry left at all
        start = checkpoints.get(lost)
        if start is None or start.seq < head.seq:
            first = start.seq + 1 if start else 1
            return Verification(finish(lost, first) or ChainBreak(first, "chain missing", lost), entries, len(seen))
    return Verification(None, entries, len(seen))


def verify(session: Session, anchor: Anchor | None = None) -> ChainBreak | None:
    """The first place where a chain does not hold, or None when every chain is intact."""
    return check(session, anchor).broken


# --- archiving ---------------------------------------------------------------------------


def archive(session: Session, before: datetime, out: Path) -> int:
    """Export each chain's entries recorded before ``before`` to ``out``, then delete them.

    The caller verifies first. Per chain the archived part is a prefix (up to the last
    entry recorded before the date), so the rest still verifies from the new checkpoint.
    ``out`` is JSON lines: per chain a ``{"checkpoint"}`` line (where the segment starts)
    followed by its entries, so the segment verifies on its own. Returns the count.
    """
    table = AuditEntry.__table__
    lines: list[bytes] = []
    cuts: dict[int, tuple[int, str]] = {}
    for chain in range(CHAINS):
        last = session.scalar(select(AuditEntry.seq).where(AuditEntry.chain == chain, AuditEntry.at < before)
                              .order_by(AuditEntry.seq.desc()).limit(1))
        if last is None:
            continue
        start = session.get(AuditCheckpoint, chain)
        lines.append(json.dumps({"checkpoint": {"chain": chain, "seq": start.seq if start else 0,
                                                "hash": start.entry_hash if start else GENESIS}}).encode())
        rows = session.connection().execute(
            select(table).where(table.c.chain == chain, table.c.seq <= last).order_by(table.c.seq)
            .execution_options(stream_results=True, yield_per=VERIFY_BATCH))
        for row in rows:
            lines.append(json.dumps({"chain": row.chain, "seq": row.seq, "at": row.at.isoformat(),
                                     "event": row.event, "data": row.data, "prev_hash": row.prev_hash,
                                     "entry_hash": row.entry_hash}, ensure_ascii=False).encode())
            cuts[chain] = (row.seq, row.entry_hash)
    if not cuts:
        return 0
    write_atomically(Path(out), b"\n".join(lines) + b"\n", 0o600)
    count = 0
    for chain, (seq, entry_hash) in cuts.items():
        count += session.execute(delete(AuditEntry).where(AuditEntry.chain == chain,
                                                          AuditEntry.seq <= seq)).rowcount
        checkpoint = session.get(AuditCheckpoint, chain)
        if checkpoint is None:
            session.add(AuditCheckpoint(chain=chain, seq=seq, entry_hash=entry_hash, archived_at=utcnow()))
        else:
            checkpoint.seq, checkpoint.entry_hash, checkpoint.archived_at = seq, entry_hash, utcnow()
    return count
