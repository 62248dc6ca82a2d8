"""The OP's signing keys, their rotation schedule and the public JWKS, shared by every instance.

Rotation follows OIDC Core §10.1.1: a new key is published in the JWKS *before* it is
used (``use_after``), so RPs that cache the JWKS can verify the first token it signs;
the old key stays published until every token it signed has expired (``retire_after``).

The schedule lives in the database (``signing_keys``), so ``idp keys rotate`` on any
machine reaches every instance: each re-reads one integer, the schedule's version
(``signing_key_schedule``, raised by every change), at most every ``refresh`` seconds
(``IDP_KEYS_REFRESH_SECONDS``) and reloads the rows only when it moved. The private
halves are reachable from every instance too: with the file backend each row carries the
private JWK sealed under a wrapping key every instance derives from its copy of the keys
folder; with an HSM they are objects of the token every instance opens.

Fail closed: an instance signs only with the key the schedule names for now, taken from
the same snapshot its JWKS is made from (so never with a key it does not publish), and
refuses to sign (503) when it cannot reach that key's private half; a key is recorded
only together with its private half (sealed in the same row, or already in the token),
so no instance ever publishes a key nobody can sign with. The rotation grace period
must exceed the refresh interval: then every instance publishes a new key before any
instance signs with it (``idp keys rotate`` refuses a shorter one).

The JWKS is serialised once per schedule version (and again only when a key retires),
so serving it costs a clock comparison, not a database read or a JSON encoding.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwk
from sqlalchemy import event, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from idp.signing import SIGNING_ALGS, KeyBackend, KeyBackendError
from idp.storage.db import Database
from idp.storage.models import SigningKey, SigningKeySchedule

ROTATION_GRACE_SECONDS = 24 * 3600
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
REFRESH_SECONDS = 30
_FOREVER = 2**62

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyEntry:
    """The key this instance signs with now for ``alg``."""

    kid: str
    alg: str
    key: jwk.Key


@dataclass(frozen=True)
class ScheduledKey:
    """One key of the deployment's schedule: when it signs, until when it is published."""

    kid: str
    alg: str
    created_at: int
    use_after: int
    retire_after: int | None
    public: dict[str, Any]

    def signs_at(self, now: int) -> bool:
        return self.use_after <= now and self.published_at(now)

    def published_at(self, now: int) -> bool:
        return self.retire_after is None or now < self.retire_after


@dataclass(frozen=True)
class _Snapshot:
    version: int
    schedule: tuple[ScheduledKey, ...]
    keys: Mapping[str, jwk.Key]  # the private halves this instance reaches, by kid
    unreachable: Mapping[str, str]  # published kid -> why this instance cannot sign with it


@dataclass(frozen=True)
class _Published:
    """What the JWKS endpoint and token checks use, valid until the next retirement."""

    snapshot: _Snapshot
    until: int
    document: bytes
    keyset: jwk.KeySet


class KeyStore:
    """The schedule in the database over a :class:`~idp.signing.KeyBackend` that reaches
    the private halves (sealed rows for files, or a PKCS#11 token)."""

    def __init__(self, db: Database, backend: KeyBackend, refresh: float = REFRESH_SECONDS) -> None:
        self.db = db
        self.backend = backend
        self.refresh = refresh
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._checked = float("-inf")
        self._published: _Published | None = None

    # ---- creation and rotation (operator side) ----
    def initialise(self, legacy_index: Path, *, create: bool) -> str | None:
        """Fill an empty schedule: import ``legacy_index`` (the ``keys/signing/index.json`` of
        earlier versions) when it exists, else create one key per algorithm when ``create``.
        Returns what was done, or None when the schedule already had keys (or stays empty)."""
        with self.db.sessions() as session:
            if session.scalar(select(SigningKey.kid).limit(1)) is not None:
                return None
        with self.db.transaction() as session:
            _take_schedule(session)
            if session.scalar(select(SigningKey.kid).limit(1)) is not None:
                return None  # another instance filled it meanwhile
            if legacy_index.exists():
                self._import(session, legacy_index)
                done = f"ID token signing keys imported from {legacy_index} into the database"
            elif create:
                now = int(time.time())
                made = [self._add(session, alg, now, now) for alg in SIGNING_ALGS]
                self._settle(session, made=made, retired=[])
                done = "ID token signing keys (ES256, RS256)"
            else:
                return None
        self._checked = float("-inf")
        return done

    def _import(self, session: Session, index_path: Path) -> None:
        try:
            index = json.loads(index_path.read_text())
            items = [(item["kid"], item["alg"], int(item["created_at"]), int(item["use_after"]),
                      item.get("retire_after")) for item in index]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise KeyStoreError(f"unreadable key index {index_path}: {exc}") from None
        for kid, alg, created_at, use_after, retire_after in items:
            if alg not in SIGNING_ALGS:
                raise KeyStoreError(f"{index_path}: unsupported algorithm {alg!r} for key {kid}")
            try:
                key, sealed = self.backend.adopt_signing_key(kid)
            except KeyBackendError as exc:
                raise KeyStoreError(str(exc)) from None
            session.add(SigningKey(kid=kid, alg=alg, created_at=created_at, use_after=use_after,
                                   retire_after=None if retire_after is None else int(retire_after),
                                   public_jwk=key.as_dict(private=False), sealed=sealed))

    def rotate(self, session: Session, *, grace: int = ROTATION_GRACE_SECONDS, now: int | None = None) -> list[str]:
        """Publish a new key per algorithm now, sign with it after ``grace``, retire the old
        ones once every token they signed has expired, and drop keys retired before ``now``.
        Commits with ``session``'s transaction (with the audit entry of the rotation)."""
        now = int(time.time()) if now is None else now
        _take_schedule(session)
        rows = list(session.scalars(select(SigningKey)))
        if not rows:
            raise KeyStoreError("no signing keys in the database: run `idp init`")
        retired = []
        for row in rows:
            if row.retire_after is not None and row.retire_after <= now:
                session.delete(row)
                retired.append(row.kid)
            elif row.retire_after is None:
                row.retire_after = now + grace + MAX_TOKEN_LIFETIME_SECONDS
        made = [self._add(session, alg, now, now + grace) for alg in SIGNING_ALGS]
        self._settle(session, made=made, retired=retired)
        self._checked = float("-inf")
        return made

    def _add(self, session: Session, alg: str, now: int, use_after: int) -> str:
        key, sealed = self.backend.generate_signing_key(alg)
        kid = str(key.kid)
        session.add(SigningKey(kid=kid, alg=alg, created_at=now, use_after=use_after, retire_after=None,
                               public_jwk=key.as_dict(private=False), sealed=sealed))
        return kid

    def _settle(self, session: Session, *, made: list[str], retired: list[str]) -> None:
        """Key objects follow the transaction: new ones are destroyed if it rolls back (no
        orphan in a token), retired ones once it commits (never before the row is gone)."""
        def destroy(kids: list[str]) -> None:
            for kid in kids:
                try:
                    self.backend.delete_signing_key(kid)
                except KeyBackendError as exc:  # it is off the schedule: nobody publishes or uses it
                    log.warning("could not destroy signing key %s: %s", kid, exc)

        settled: list[bool] = []  # the first outcome of this transaction decides, once

        def committed(_session: Session) -> None:
            if not settled:
                settled.append(True)
                destroy(retired)

        def rolled_back(_session: Session) -> None:
            if not settled:
                settled.append(False)
                destroy(made)

        event.listen(session, "after_commit", committed)
        event.listen(session, "after_rollback", rolled_back)

    # ---- use (server side) ----
    def _current(self) -> _Snapshot:
        """The schedule as of at most ``refresh`` seconds ago (one version read per interval)."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked < self.refresh:
            return snapshot
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._checked < self.refresh:
                return self._snapshot
            try:
                self._snapshot = self._reload(self._snapshot)
            except SQLAlchemyError as exc:
                if self._snapshot is None:
                    raise
                # Keep the last schedule: a rotation is at least a grace period away from use,
                # and the outage itself shows on /readyz and in requests that need the database.
                log.warning("could not re-read the signing key schedule: %s", type(exc).__name__)
            self._checked = time.monotonic()
            return self._snapshot

    def _reload(self, previous: _Snapshot | None) -> _Snapshot:
        with self.db.sessions() as session:
            version = session.scalar(select(SigningKeySchedule.version).where(SigningKeySchedule.id == 1))
            if version is None:
                raise KeyStoreError("the database has no signing key schedule: run `idp db upgrade`")
            if previous is not None and previous.version == version and not previous.unreachable:
                return previous
            rows = list(session.scalars(select(SigningKey)))
        now = int(time.time())
        schedule = tuple(ScheduledKey(row.kid, row.alg, row.created_at, row.use_after, row.retire_after,
                                      {**row.public_jwk, "use": "sig", "alg": row.alg}) for row in rows)
        known = previous.keys if previous is not None else {}
        keys: dict[str, jwk.Key] = {}
        unreachable: dict[str, str] = {}
        for row in rows:
            if row.retire_after is not None and row.retire_after <= now:
                continue  # retired: neither published nor used, its private half may be gone
            if row.kid in known:
                keys[row.kid] = known[row.kid]
                continue
            try:
                keys[row.kid] = self._private_half(row)
            except KeyBackendError as exc:
                unreachable[row.kid] = str(exc)
                log.error("signing key %s is on the schedule but this instance cannot reach its private half: %s",
                          row.kid, exc)
        return _Snapshot(version, schedule, keys, unreachable)

    def _private_half(self, row: SigningKey) -> jwk.Key:
        key = self.backend.signing_key(row.kid, row.sealed)
        public = key.as_dict(private=False)
        if any(public.get(name) != value for name, value in row.public_jwk.items()):
            raise KeyBackendError(f"the private half found for {row.kid} does not match its published key")
        return key

    def signing_key(self, alg: str) -> KeyEntry:
        """The key the schedule names for ``alg`` now: of those past their grace period, the one
        the latest rotation made (a rotation during another's grace period wins over it)."""
        if alg not in SIGNING_ALGS:
            raise KeyStoreError(f"unsupported signing algorithm {alg}")
        snapshot = self._current()
        if not snapshot.schedule:
            raise KeyStoreError("no ID token signing keys in the database: create them with `idp init`")
        now = int(time.time())
        usable = [entry for entry in snapshot.schedule if entry.alg == alg and entry.signs_at(now)]
        if not usable:
            raise KeyStoreError(f"no usable {alg} signing key on the schedule: run `idp keys rotate`")
        chosen = max(usable, key=lambda entry: (entry.created_at, entry.use_after))
        key = snapshot.keys.get(chosen.kid)
        if key is None:
            raise KeyStoreError(f"this instance cannot reach the private half of signing key {chosen.kid} "
                                "(is its keys folder or PKCS#11 token the deployment's?)")
        return KeyEntry(chosen.kid, alg, key)

    def _now_published(self) -> _Published:
        snapshot = self._current()
        now = int(time.time())
        published = self._published
        if published is not None and published.snapshot is snapshot and now < published.until:
            return published
        keys = [entry for entry in snapshot.schedule if entry.published_at(now)]
        until = min((entry.retire_after for entry in keys if entry.retire_after is not None), default=_FOREVER)
        published = _Published(snapshot, until, json.dumps({"keys": [entry.public for entry in keys]}).encode(),
                               jwk.KeySet([jwk.import_key(entry.public) for entry in keys]))
        self._published = published
        return published

    def jwks_document(self) -> bytes:
        """The JWKS (RFC 7517 §5) as served: keys in their grace period and retiring ones (§10.1.1)."""
        return self._now_published().document

    def public_jwks(self) -> dict[str, Any]:
        return json.loads(self._now_published().document)

    def verification_keys(self) -> jwk.KeySet:
        """Published keys, for checking our own tokens (``id_token_hint``, logout)."""
        return self._now_published().keyset

    def unreachable(self) -> Mapping[str, str]:
        """Published keys whose private half this instance cannot reach, with the reason."""
        return self._current().unreachable

    def check(self) -> None:
        """Refuse to start unless this instance can sign with every algorithm now."""
        for alg in SIGNING_ALGS:
            self.signing_key(alg)


def _take_schedule(session: Session) -> None:
    """Raise the schedule's version first thing in a change: every instance reloads, and
    the row stays locked until commit, so concurrent rotations or first starts take turns
    (PostgreSQL row lock; SQLite's single writer)."""
    result = session.execute(update(SigningKeySchedule).where(SigningKeySchedule.id == 1)
                             .values(version=SigningKeySchedule.version + 1))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise KeyStoreError("the database has no signing key schedule: run `idp db upgrade`")


class KeyStoreError(RuntimeError):
    """Missing or inconsistent key material: the server refuses to start or sign."""

