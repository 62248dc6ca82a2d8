"""The OP's signing keys, their rotation and the public JWKS: the one module holding JOSE keys.

Rotation follows OIDC Core §10.1.1: a new key is published in the JWKS *before* it is
used (``use_after``), so RPs that cache the JWKS can verify the first token it signs;
the old key stays published until every token it signed has expired (``retire_after``).
Keys are parsed once and re-read only when the index file changes (another worker or
``idp keys rotate`` wrote it).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwk

from idp.files import write_atomically
from idp.signing import SIGNING_ALGS, KeyBackend, KeyBackendError
from idp.signing.files import FileKeyBackend

DEFAULT_ALG = "ES256"
ROTATION_GRACE_SECONDS = 24 * 3600
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    alg: str
    created_at: int
    use_after: int
    retire_after: int | None
    key: jwk.Key

    def signs_at(self, now: int) -> bool:
        return self.use_after <= now and self.published_at(now)

    def published_at(self, now: int) -> bool:
        return self.retire_after is None or now < self.retire_after


class KeyStore:
    """The signing keys' schedule (``index.json``) over a :class:`~idp.signing.KeyBackend`
    that holds the private halves (files, or a PKCS#11 token)."""

    def __init__(self, folder: Path, backend: KeyBackend | None = None) -> None:
        self.backend = backend or FileKeyBackend(folder)
        self.folder = folder / "signing"
        self.index_path = self.folder / "index.json"
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._checked = 0.0
        self._entries: tuple[KeyEntry, ...] = ()
        self._public: dict[str, dict[str, Any]] = {}

    # ---- creation and rotation (operator side) ----
    def initialise(self) -> bool:
        """Create one key per algorithm if none exist; True when something was created."""
        if self.index_path.exists():
            return False
        now = int(time.time())
        self._write([self._new_entry(alg, now, now) for alg in SIGNING_ALGS])
        return True

    def rotate(self, *, grace: int = ROTATION_GRACE_SECONDS, now: int | None = None) -> list[str]:
        """Publish a new key per algorithm now, sign with it after ``grace``, retire the old ones."""
        now = int(time.time()) if now is None else now
        entries = list(self._read_index_entries())
        new = [self._new_entry(alg, now, now + grace) for alg in SIGNING_ALGS]
        kept = []
        for entry in entries:
            if entry.retire_after is not None and entry.retire_after <= now:
                self.backend.delete_signing_key(entry.kid)
                continue
            if entry.retire_after is None:
                entry = KeyEntry(entry.kid, entry.alg, entry.created_at, entry.use_after,
                                 now + grace + MAX_TOKEN_LIFETIME_SECONDS, entry.key)
            kept.append(entry)
        self._write(kept + new)
        return [entry.kid for entry in new]

    def _new_entry(self, alg: str, now: int, use_after: int) -> KeyEntry:
        key = self.backend.generate_signing_key(alg)
        return KeyEntry(key.kid, alg, now, use_after, None, key)

    def _write(self, entries: list[KeyEntry]) -> None:
        index = [
            {"kid": e.kid, "alg": e.alg, "created_at": e.created_at, "use_after": e.use_after,
             "retire_after": e.retire_after}
            for e in entries
        ]
        write_atomically(self.index_path, json.dumps(index, indent=1).encode())
        self._mtime = -1.0
        self._checked = 0.0

    def _read_index_entries(self) -> list[KeyEntry]:
        try:
            index = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            raise KeyStoreError(f"no signing keys in {self.folder}: run `idp init`") from None
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"unreadable key index {self.index_path}: {exc}") from exc
        entries = []
        for item in index:
            try:
                key = self.backend.signing_key(item["kid"])
            except KeyBackendError as exc:
                raise KeyStoreError(str(exc)) from None
            if key.kid != item["kid"] or item["alg"] not in SIGNING_ALGS:
                raise KeyStoreError(f"key file for {item['kid']} does not match its index entry")
            entries.append(KeyEntry(item["kid"], item["alg"], item["created_at"], item["use_after"],
                                    item.get("retire_after"), key))
        return entries

    # ---- use (server side) ----
    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 2.0 and self._entries:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = self.index_path.stat().st_mtime
            except FileNotFoundError:
                raise KeyStoreError(f"no signing keys in {self.folder}: run `idp init`") from None
            if mtime == self._mtime:
                return
            entries = tuple(self._read_index_entries())
            wall = int(time.time())
            for alg in SIGNING_ALGS:
                if not any(e.alg == alg and e.signs_at(wall) for e in entries):
                    raise KeyStoreError(f"no usable {alg} signing key in {self.folder}")
            self._entries = entries
            self._public = {e.kid: {**e.key.as_dict(private=False), "use": "sig", "alg": e.alg} for e in entries}
            self._mtime = mtime

    def signing_key(self, alg: str) -> KeyEntry:
        """The newest key for ``alg`` past its publication grace period (the old one until then)."""
        if alg not in SIGNING_ALGS:
            raise KeyStoreError(f"unsupported signing algorithm {alg}")
        self._refresh()
        now = int(time.time())
        usable = [e for e in self._entries if e.alg == alg and e.signs_at(now)]
        if not usable:
            raise KeyStoreError(f"no usable {alg} signing key in {self.folder}")
        return max(usable, key=lambda e: e.use_after)

    def public_jwks(self) -> dict[str, Any]:
        """Keys published now: the ones in their grace period and the retiring ones (§10.1.1)."""
        self._refresh()
        now = int(time.time())
        return {"keys": [self._public[e.kid] for e in self._entries if e.published_at(now)]}

    def verification_keys(self) -> jwk.KeySet:
        """Published keys, for checking our own tokens (``id_token_hint``, logout)."""
        self._refresh()
        now = int(time.time())
        return jwk.KeySet([e.key for e in self._entries if e.published_at(now)])


class KeyStoreError(RuntimeError):
    """Missing or inconsistent key material: the server refuses to start or sign."""
