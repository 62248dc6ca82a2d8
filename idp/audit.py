"""Tamper-evident audit log: append-only hash chains, each entry committing to the previous one.

``entry_hash = SHA-256(prev_hash || canonical JSON of (seq, at, event, data))``. Editing,
deleting or reordering any entry breaks its chain from that entry on, which
``idp audit verify`` reports. Entries are written in the same transaction as the change
they record, so a change and its audit entry commit together or not at all.
Data holds identifiers only (opaque account id, certificate serial, client id), never
personal attributes and never an individual number.

**Several chains, no global lock.** One chain needs one writer at a time until commit, which
serialised every instance on one lock. The log is therefore ``CHAINS`` independent chains
(``chain`` column, ``seq`` counting 1, 2, 3… within each). Within a chain ``seq`` order is
commit order: an entry is written only after a predecessor it can see, a committed one or
its own transaction's.

**One statement per entry.** Each process remembers, per database, the newest entry it
committed on each chain it appended to (taken in after the commit; never from a
transaction or savepoint that rolled back). An append after that head is one statement::

    INSERT INTO audit_log (chain, seq, at, event, data, prev_hash, entry_hash)
    SELECT prev.chain, prev.seq + 1, :at, :event, :data, prev.entry_hash, :entry_hash
    FROM audit_log AS prev WHERE prev.chain = :chain AND prev.seq = :seq AND prev.entry_hash = :hash
      [AND pg_try_advisory_xact_lock(…, :chain)]
    ON CONFLICT (chain, seq) DO NOTHING

It writes a row only when the head is still there with that hash and the place after it is
free (a later entry would hold ``seq + 1``: the primary key), i.e. exactly when the head is
the chain's newest entry, and the row links to it. So the remembered head is a hint that
cannot break a chain: when it is stale (another process appended, the head was archived)
the statement writes nothing, and the append falls back to reading the chain's tail (or
checkpoint) and inserting after it, now remembering that. A second entry of one
transaction follows its first the same way. A hit costs one statement, a miss three (the
statement, the tail read, the insert; on PostgreSQL one more to take another chain's lock).

PostgreSQL: a chain's transaction-scoped advisory lock makes its writers take turns until
commit and lets a writer take a free chain instead of waiting. The unique (chain, seq) key
alone would keep each chain whole and in commit order (a second insert of one key waits for
the first transaction, then does nothing), but that writer would wait for the whole of the
other's transaction; so the fast statement tries the lock itself
(``pg_try_advisory_xact_lock`` in its ``WHERE``, evaluated on the predecessor row the key
finds): a chain another transaction holds is a miss, not a wait. Every row is written under
its chain's lock, so no insert ever waits on another's uncommitted entry. The fallback takes
the first free chain in one statement (``unnest`` of a list of chains, ``LIMIT 1``), reads
its tail and inserts; only when every chain is busy does it wait for one. Which chain: each
transaction tries a chain this process remembers a head of and no other of its open
transactions holds. A process with none starts its scan at 0 (a quiet system writes chain 0
only); a process that missed forgets that chain and scans from a random one, trying the
missed chain last, so processes spread over chains of their own rather than take turns on
one. A miss may leave the missed chain's lock taken (released at commit); since every chain
is tried before waiting, and a lock this transaction holds is granted again at once, a
transaction waits only while holding none: no deadlock.

SQLite: one writer at a time, and the statement is a write, so its check and insert run
under the write lock. With several worker processes on one file a single chain's head would
be stale whenever another process wrote last, so each process has a home chain (first chain
0, so a single process writes chain 0 only), and when its statement misses for another
reason than its own threads (another process appended there, or the head was archived) it
moves home to another chain at random: the processes soon each have one. A miss because
another thread of the process committed meanwhile (possible only when the append is its
transaction's first write) retries after that thread's entry instead. A transaction that has
not written yet reads the tail outside the lock; should another writer append in between,
its insert writes nothing but takes the lock, and the second round cannot miss.

**Head anchor, batched.** A chain alone cannot show that its newest entries were cut off
(or rewritten by someone with database access). So the head of every chain (highest
``seq`` and its hash) is also anchored outside the database, in ``audit.head`` in the keys
folder, only ever forward; ``verify`` requires each anchored entry to exist with that hash.
The anchor is written at most once per ``ANCHOR_INTERVAL`` seconds or per ``ANCHOR_BATCH``
entries per process (and at exit), not per commit, and by a thread of its own, never by a
request: one atomic file write (with fsync) per batch instead of one per login. Each write also takes in the heads of the chains other
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

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
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


@dataclass(eq=False)
class _Known:
    """What this process knows of one database's chains (module doc, "One statement")."""

    heads: dict[int, Head] = field(default_factory=dict)
    """The newest committed entry of each chain this process appended to: a hint, which the
    append checks in its own statement."""
    held: set[int] = field(default_factory=set)
    """PostgreSQL: the chains whose lock open transactions of this process hold."""
    home: int = 0
    """SQLite: the chain this process appends to."""
    lock: threading.Lock = field(default_factory=threading.Lock)


_KNOWN: dict[Any, _Known] = {}
os.register_at_fork(after_in_child=_KNOWN.clear)  # a worker starts knowing nothing, holding nothing


def _known(engine: Engine) -> _Known:
    """By database URL, so that every engine of the process on one database shares it; an
    in-memory SQLite database is its engine's own."""
    key: Any = engine.url if engine.url.database not in (None, "", ":memory:") else engine
    return _KNOWN.get(key) or _KNOWN.setdefault(key, _Known())


@dataclass(eq=False)
class _Appending:
    """One transaction's appends, in ``session.info`` until it ends."""

    known: _Known
    chain: int | None = None  # the chain it appends to, and its newest entry there
    head: Head | None = None
    held: list[int] = field(default_factory=list)  # the chains it marked in ``known.held``
    pending: list[tuple[int, Head, str, Any]] = field(default_factory=list)  # (chain, head, event, savepoint)


_APPENDING_KEY = "audit_appending"


def record(session: Session, event: str, **data: Any) -> AuditEntry:
    """Append an entry in the caller's transaction (module doc: one statement when the head
    this process knows is still the newest entry of its chain).

    The entry is written at once, as a plain insert (not through the session's unit of
    work). The returned object is a copy of what was written, not attached to the session."""
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    appending = session.info.get(_APPENDING_KEY)
    if appending is None:
        appending = session.info[_APPENDING_KEY] = _Appending(_known(connection.engine))
    at, clean = utcnow(), {k: v for k, v in data.items() if v is not None}
    own = appending.chain is not None  # this transaction appended before: after its own entry
    chain, head = (appending.chain, appending.head) if own else _preferred(appending, postgres)
    values = None if head is None else _append_after(connection, postgres, appending.known, chain, head, at, event,
                                                     clean)
    if values is None:
        missed = chain if head is not None and not own else None
        if postgres:
            chain = _lock_a_chain(session, appending, first=chain if own else None, last=missed)
        elif missed is not None:
            chain = _move(appending.known, missed)
        values = _append_at_tail(session, connection, postgres, chain, at, event, clean)
    appending.chain, appending.head = chain, Head(values["seq"], values["entry_hash"])
    appending.pending.append((chain, appending.head, event, session.get_nested_transaction()))
    return AuditEntry(**values)


def _preferred(appending: _Appending, postgres: bool) -> tuple[int | None, Head | None]:
    """The chain to try first, and the head this process last committed there.

    PostgreSQL: a chain this process appended to that no other transaction of it holds now
    (marked held for this one); none, when it has no such chain. SQLite: its home chain."""
    known = appending.known
    with known.lock:
        if not postgres:
            return known.home, known.heads.get(known.home)
        chain = next((c for c in known.heads if c not in known.held), None)
        if chain is None:
            return None, None
        known.held.add(chain)
        appending.held.append(chain)
        return chain, known.heads[chain]


def _append_after(connection: Connection, postgres: bool, known: _Known, chain: int, head: Head, at: datetime,
                  event: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """Append after ``head`` in one statement, unless it is not the chain's newest entry (or,
    on PostgreSQL, another transaction holds the chain): then None, and nothing written."""
    while True:
        values = _entry(chain, head, at, event, data)
        guarded = {"chain": chain, "prev_seq": head.seq, "prev_hash": head.entry_hash, "at": at, "event": event,
                   "data": data, "entry_hash": values["entry_hash"]}
        if connection.execute(_APPEND_AFTER[postgres], guarded).rowcount == 1:
            return values
        with known.lock:  # SQLite: another thread of this process may have appended since the head was read
            newer = known.heads.get(chain)
        if newer is None or newer.seq <= head.seq:
            return None
        head = newer


def _lock_a_chain(session: Session, appending: _Appending, first: int | None, last: int | None) -> int:
    """PostgreSQL: take a free chain's lock (module doc), trying ``first`` (the chain this
    transaction already appends to) first and ``last`` (the chain it just missed) last.

    Every chain is tried before waiting, so a transaction waits only while it holds no
    chain (the lock of one it holds is granted again at once): no deadlock between waiters."""
    known = appending.known
    with known.lock:
        if last is not None:
            known.heads.pop(last, None)
        start = 0 if last is None and not known.heads else random.randrange(CHAINS)
        busy = known.held.difference(appending.held)  # held by this process's other transactions
    others = [c for c in (*range(start, CHAINS), *range(start)) if c not in busy and c not in (first, last)]
    order = [c for c in (first,) if c is not None] + others + [c for c in (last,) if c is not None]
    chain = session.scalar(_TRY_LOCKS, {"k": _PG_LOCK_CLASS, "chains": order})
    if chain is None:  # every chain busy: queue on one, spreading the waiters
        chain = random.randrange(CHAINS)
        session.execute(_LOCK, {"k": _PG_LOCK_CLASS, "c": chain})
    with known.lock:
        known.held.add(chain)
        appending.held.append(chain)
    return chain


def _move(known: _Known, chain: int) -> int:
    """SQLite: another process appended to ``chain`` since this one did: leave it to that
    process and append to another chain from now on (module doc)."""
    with known.lock:
        known.heads.pop(chain, None)
        if known.home == chain:
            known.home = random.choice([c for c in range(CHAINS) if c != chain])
        return known.home


def _append_at_tail(session: Session, connection: Connection, postgres: bool, chain: int, at: datetime, event: str,
                    data: dict[str, Any]) -> dict[str, Any]:
    """Read the chain's newest entry (or its checkpoint), append after it.

    On PostgreSQL the chain's lock is held: the insert cannot meet another entry. On SQLite
    a transaction that has not written yet reads outside any lock; should another writer
    append in between, the insert writes nothing but takes the write lock, and the second
    round cannot miss."""
    while True:
        tail = connection.execute(_TAIL, {"chain": chain}).first()
        if tail is None:
            checkpoint = session.get(AuditCheckpoint, chain)
            tail = (checkpoint.seq, checkpoint.entry_hash) if checkpoint else (0, GENESIS)
        values = _entry(chain, Head(*tail), at, event, data)
        if connection.execute(_APPEND[postgres], values).rowcount == 1:
            return values


def _entry(chain: int, head: Head, at: datetime, event: str, data: dict[str, Any]) -> dict[str, Any]:
    seq = head.seq + 1
    return {"chain": chain, "seq": seq, "at": at, "event": event, "data": data, "prev_hash": head.entry_hash,
            "entry_hash": _digest(head.entry_hash, seq, at.isoformat(), event, data)}


def _append_after_statement(insert_: Any, lock: bool) -> Any:
    """``INSERT … SELECT`` from the predecessor row (the head), only when it is there with that
    hash (and, with ``lock``, the chain's advisory lock is free or already this
    transaction's); nothing when its successor exists. SQLite parses the upsert only after
    a ``WHERE``, which this always has."""
    table = AuditEntry.__table__
    prev = table.alias("prev")
    guard = [prev.c.chain == bindparam("chain"), prev.c.seq == bindparam("prev_seq"),
             prev.c.entry_hash == bindparam("prev_hash")]
    if lock:
        guard.append(func.pg_try_advisory_xact_lock(_PG_LOCK_CLASS, bindparam("chain")))
    row = select(prev.c.chain, prev.c.seq + 1, bindparam("at", type_=table.c.at.type),
                 bindparam("event", type_=table.c.event.type), bindparam("data", type_=table.c.data.type),
                 prev.c.entry_hash, bindparam("entry_hash", type_=table.c.entry_hash.type)).where(*guard)
    columns = ["chain", "seq", "at", "event", "data", "prev_hash", "entry_hash"]
    return (insert_(table).from_select(columns, row).on_conflict_do_nothing(index_elements=["chain", "seq"])
            .execution_options(preserve_rowcount=True))


def _append_statement(insert_: Any) -> Any:
    return (insert_(AuditEntry.__table__).on_conflict_do_nothing(index_elements=["chain", "seq"])
            .execution_options(preserve_rowcount=True))


_APPEND_AFTER = {True: _append_after_statement(postgresql.insert, lock=True),
                 False: _append_after_statement(sqlite.insert, lock=False)}
"""By "is PostgreSQL": the fast path's one statement."""
_APPEND = {True: _append_statement(postgresql.insert), False: _append_statement(sqlite.insert)}
_TAIL = (select(AuditEntry.seq, AuditEntry.entry_hash).where(AuditEntry.chain == bindparam("chain"))
         .order_by(AuditEntry.seq.desc()).limit(1))
_TRY_LOCKS = text("SELECT c FROM unnest(CAST(:chains AS integer[])) AS c "
                  "WHERE pg_try_advisory_xact_lock(:k, c) LIMIT 1")
"""The first chain in the list whose lock is free, taken: the scan stops at the first row
that passes (one lock taken, not one per chain)."""
_LOCK = text("SELECT pg_advisory_xact_lock(:k, :c)")


# The three transaction events, for every session (cheaper than listening per session).


def _committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    appending = session.info.get(_APPENDING_KEY)
    if appending is None or not appending.pending:
        return
    heads: Anchor = {}
    for chain, head, event, _ in appending.pending:  # in order: the last of a chain is its newest
        metrics.audit_event(event)
        heads[chain] = head
    known = appending.known
    with known.lock:  # only now, committed, do they become this process's heads
        for chain, head in heads.items():
            if chain not in known.heads or known.heads[chain].seq < head.seq:
                known.heads[chain] = head
    folder = _anchor_dir(session)
    if folder is not None:
        anchorer.add(folder, heads, session.get_bind().engine)


def _rolled_back(session: Session) -> None:
    """A savepoint rolled back: its entries are gone, the transaction's others stay (a whole
    transaction's rollback is handled when it ends)."""
    savepoint = session.get_nested_transaction()
    appending = session.info.get(_APPENDING_KEY)
    if savepoint is None or appending is None:
        return
    appending.pending = [entry for entry in appending.pending if not _within(entry[3], savepoint)]
    newest = [head for chain, head, _, _ in appending.pending if chain == appending.chain]
    appending.head = newest[-1] if newest else None  # the next append reads the tail


def _within(transaction: Any, savepoint: Any) -> bool:
    while transaction is not None and transaction is not savepoint:
        transaction = transaction.parent
    return transaction is savepoint


def _ended(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:
        return
    appending = session.info.pop(_APPENDING_KEY, None)
    if appending is not None and appending.held:
        with appending.known.lock:
            appending.known.held.difference_update(appending.held)


sa_event.listen(Session, "after_commit", _committed)
sa_event.listen(Session, "after_rollback", _rolled_back)
sa_event.listen(Session, "after_transaction_end", _ended)


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
    _due: threading.Event = field(default_factory=threading.Event)
    _writing: threading.Lock = field(default_factory=threading.Lock)  # one batch written at a time

    def add(self, folder: Path, heads: Anchor, engine: Engine) -> None:
        """Note committed heads; a batch that is due is written by this process's anchor
        thread, never by the request that committed (its fsync and head reads would add
        milliseconds to that one request)."""
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
            self._due.set()

    def _ensure_timer(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()  # a forked worker starts its own thread (threads do not survive fork)
        threading.Thread(target=self._tick, name="audit-anchor", daemon=True).start()

    def after_fork_in_child(self) -> None:
        """A forked child starts with fresh locks and nothing pending: the parent's anchor
        thread may have held a lock at the fork, and it does not run here to release it (the
        parent still writes what it had pending)."""
        self._lock, self._writing, self._due = threading.Lock(), threading.Lock(), threading.Event()
        self._pending, self._count, self._pid = {}, 0, 0

    def _tick(self) -> None:
        while True:
            self._due.wait(self.interval)
            self._due.clear()
            self.flush()

    def flush(self) -> None:
        """Write every pending head now (also called at exit and by the CLI); returns once
        every head noted before the call is written, by this call or by the anchor thread's."""
        with self._writing:
            self._write()

    def _write(self) -> None:
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
os.register_at_fork(after_in_child=anchorer.after_fork_in_child)


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
