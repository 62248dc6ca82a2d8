"""Signing keys: creation, file modes, the public JWKS and rotation (OIDC Core §10.1.1)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from idp import keystore as ks
from idp.keystore import MAX_TOKEN_LIFETIME_SECONDS, KeyStore

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
T0 = 1_800_000_000
GRACE = 3600


class Clock:
    """Stands in for the ``time`` module inside idp.keystore."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(T0)
    monkeypatch.setattr(ks, "time", c)
    return c


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> KeyStore:
    s = KeyStore(tmp_path)
    assert s.initialise() is True
    return s


def kids(jwks: dict) -> set[str]:
    return {k["kid"] for k in jwks["keys"]}


def test_initialise_is_idempotent(tmp_path: Path, store: KeyStore) -> None:
    before = sorted(p.name for p in store.folder.iterdir())
    assert store.initialise() is False
    assert KeyStore(tmp_path).initialise() is False
    assert sorted(p.name for p in store.folder.iterdir()) == before
    assert len(before) == 3  # index + one key per algorithm


def test_key_files_are_private(store: KeyStore) -> None:
    files = list(store.folder.iterdir())
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_jwks_has_public_keys_only(store: KeyStore) -> None:
    keys = store.public_jwks()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_MEMBERS & key.keys()
        assert key["use"] == "sig" and key["kid"]


def test_one_key_per_algorithm_with_its_kid(store: KeyStore) -> None:
    es, rs = store.signing_key("ES256"), store.signing_key("RS256")
    assert es.kid != rs.kid
    by_kid = {k["kid"]: k for k in store.public_jwks()["keys"]}
    assert by_kid[es.kid]["kty"] == "EC" and by_kid[es.kid]["crv"] == "P-256"
    assert by_kid[es.kid]["alg"] == "ES256"
    assert by_kid[rs.kid]["kty"] == "RSA" and by_kid[rs.kid]["alg"] == "RS256"
    with pytest.raises(ks.KeyStoreError):
        store.signing_key("HS256")


def test_missing_keys_are_a_clear_error(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(ks.KeyStoreError, match="idp init"):
        KeyStore(tmp_path).public_jwks()


def test_rotation_publishes_before_use_and_retires_after_grace(tmp_path: Path, store: KeyStore,
                                                               clock: Clock) -> None:
    old = store.signing_key("ES256").kid
    new_kids = store.rotate(grace=GRACE, now=T0)
    assert len(new_kids) == 2 and old not in new_kids

    # Right after rotation: the new key is published, the old one still signs.
    fresh = KeyStore(tmp_path)
    assert set(new_kids) <= kids(fresh.public_jwks())
    assert old in kids(fresh.public_jwks())
    assert fresh.signing_key("ES256").kid == old

    # Just before the grace period ends, nothing changes.
    clock.now = T0 + GRACE - 1
    assert KeyStore(tmp_path).signing_key("ES256").kid == old

    # After the grace period the new key signs; the old one is still published.
    clock.now = T0 + GRACE
    fresh = KeyStore(tmp_path)
    new = fresh.signing_key("ES256").kid
    assert new in new_kids
    assert {new, old} <= kids(fresh.public_jwks())
    assert old in {k.kid for k in fresh.verification_keys().keys}

    # Once every token the old key signed has expired, it is no longer published.
    clock.now = T0 + GRACE + MAX_TOKEN_LIFETIME_SECONDS
    fresh = KeyStore(tmp_path)
    assert old not in kids(fresh.public_jwks())
    assert old not in {k.kid for k in fresh.verification_keys().keys}
    assert set(new_kids) <= kids(fresh.public_jwks())

    # The next rotation deletes the retired key files.
    store.rotate(grace=GRACE, now=int(clock.now))
    assert not (store.folder / f"{old}.json").exists()
    assert (store.folder / f"{new}.json").exists()


def test_running_server_stops_publishing_a_retired_key(tmp_path: Path, store: KeyStore,
                                                       clock: Clock) -> None:
    old = store.signing_key("ES256").kid
    store.rotate(grace=GRACE, now=T0)
    server = KeyStore(tmp_path)
    assert old in kids(server.public_jwks())
    clock.now = T0 + GRACE + MAX_TOKEN_LIFETIME_SECONDS + 10
    assert old not in kids(server.public_jwks())
