"""The published signing keys and their rotation schedule, shared by every instance.

Each instance's :class:`~idp.keystore.KeyStore` holds the private halves (files, or a
PKCS#11 token) and its own ``index.json``. The deployment's schedule lives in the
database (``signing_keys``: kid, alg, ``use_after``, ``retire_after`` and the public
JWK), written by ``idp init``/``idp serve`` at start and by ``idp keys rotate`` on any
machine, and re-read by every instance at least every ``REFRESH_SECONDS``.

So every instance publishes the same JWKS, including a key rotated in on another machine
(OIDC Core §10.1.1: published *before* use), and signs with the newest key whose
``use_after`` has passed among those whose private half it holds. An instance that lacks
a new key's private half (a keys folder not yet copied) keeps signing with the previous
key, which stays published until every token it signed has expired; it never signs
with a key other instances do not publish. The rotation grace period must therefore
exceed ``REFRESH_SECONDS`` plus the RPs' JWKS cache time (the default grace is a day).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from joserfc import jwk
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from idp.keystore import KeyEntry, KeyStore, KeyStoreError
from idp.storage.db import Database
from idp.storage.models import SigningKey

REFRESH_SECONDS = 30.0

log = logging.getLogger(__name__)


def publish(session: Session, store: KeyStore) -> list[str]:
    """Record every key of ``store``'s schedule in the database; returns the kids added.

    A key already listed keeps its row, except that the earlier retirement wins (a
    rotation retires the old keys wherever it ran).
    """
    added = []
    for entry in store.entries():
        row = session.get(SigningKey, entry.kid)
        if row is None:
            session.add(SigningKey(kid=entry.kid, alg=entry.alg, created_at=entry.created_at,
                                   use_after=entry.use_after, retire_after=entry.retire_after,
                                   public_jwk=entry.key.as_dict(private=False)))
            added.append(entry.kid)
        elif entry.retire_after is not None and (row.retire_after is None or entry.retire_after < row.retire_after):
            row.retire_after = entry.retire_after
    return added


class SharedKeys:
    """The keystore interface the endpoints use, with the schedule taken from the database."""

    def __init__(self, store: KeyStore, db: Database, refresh: float = REFRESH_SECONDS) -> None:
        self.store = store
        self.db = db
        self.refresh = refresh
        self._lock = threading.Lock()
        self._rows: tuple[SigningKey, ...] = ()
        self._loaded = float("-inf")

    def _schedule(self) -> tuple[SigningKey, ...]:
        if time.monotonic() - self._loaded < self.refresh:
            return self._rows
        with self._lock:
            if time.monotonic() - self._loaded >= self.refresh:
                try:
                    with self.db.sessions() as session:
                        rows = tuple(session.scalars(select(SigningKey)))
                        session.expunge_all()
                    self._rows = rows
                except SQLAlchemyError as exc:  # keep the last schedule; the outage shows elsewhere
                    log.warning("could not re-read the signing key schedule: %s", type(exc).__name__)
                self._loaded = time.monotonic()
        return self._rows

    def signing_key(self, alg: str) -> KeyEntry:
        """The newest key for ``alg`` the schedule lets sign now and this instance holds."""
        rows = self._schedule()
        if not rows:
            return self.store.signing_key(alg)
        now = int(time.time())
        held = {entry.kid: entry for entry in self.store.entries()}
        usable = [row for row in rows if row.alg == alg and row.kid in held and row.use_after <= now
                  and (row.retire_after is None or now < row.retire_after)]
        if not usable:
            raise KeyStoreError(f"no usable {alg} signing key held by this instance")
        return held[max(usable, key=lambda row: row.use_after).kid]

    def _published(self) -> list[dict[str, Any]] | None:
        rows = self._schedule()
        if not rows:
            return None
        now = int(time.time())
        return [{**row.public_jwk, "use": "sig", "alg": row.alg} for row in rows
                if row.retire_after is None or now < row.retire_after]

    def public_jwks(self) -> dict[str, Any]:
        """Every key the deployment publishes now, wherever it was rotated in (§10.1.1)."""
        published = self._published()
        return self.store.public_jwks() if published is None else {"keys": published}

    def verification_keys(self) -> jwk.KeySet:
        published = self._published()
        if published is None:
            return self.store.verification_keys()
        return jwk.KeySet([jwk.import_key(key) for key in published])
