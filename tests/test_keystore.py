"""Signing keys: creation, sealing, the public JWKS, rotation (OIDC Core §10.1.1) and the
schedule every instance shares through the database (re-read on a version change only)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select, update

from idp import keystore as ks
from idp.keystore import MAX_TOKEN_LIFETIME_SECONDS, KeyStore, KeyStoreError
from idp.signing import KeyBackendError
from idp.signing.files import FileKeyBackend
from idp.storage.db import Database
from idp.storage.models import SigningKey, SigningKeySchedule
from idp.context import initialise
from idp.settings import Settings
from tests.support.server import command_env, fresh_database, idp_command

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
T0 = 1_800_000_000
GRACE = 3600
REFRESH = 30


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
def database(tmp_path: Path) -> Iterator[Database]:
    with fresh_database(tmp_path / "db") as url:
        db = Database(url)
        db.upgrade()
        try:
            yield db
        finally:
            db.dispose()


def keys_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pairwise.salt").write_bytes(b"s" * 32)
    return path


def new_store(database: Database, folder: Path) -> KeyStore:
    return KeyStore(database, FileKeyBackend(folder), REFRESH)


@pytest.fixture
def store(tmp_path: Path, database: Database, clock: Clock) -> KeyStore:
    s = new_store(database, keys_folder(tmp_path / "keys"))
    assert s.initialise(tmp_path / "keys" / "signing" / "index.json", create=True) == \
        "ID token signing keys (ES256, RS256)"
    return s


def kids(jwks: dict) -> set[str]:
    return {k["kid"] for k in jwks["keys"]}


def rotate(store: KeyStore, *, grace: int = GRACE, now: int | None = None) -> list[str]:
    with store.db.transaction() as session:
        return store.rotate(session, grace=grace, now=now)


def test_initialise_is_idempotent_and_writes_no_key_file(tmp_path: Path, store: KeyStore, database: Database) -> None:
    assert store.initialise(tmp_path / "none.json", create=True) is None
    with database.sessions() as session:
        assert len(session.scalars(select(SigningKey)).all()) == 2
    assert not (tmp_path / "keys" / "signing").exists()


def test_the_database_holds_private_halves_only_sealed(store: KeyStore, database: Database) -> None:
    with database.sessions() as session:
        rows = session.scalars(select(SigningKey)).all()
    for row in rows:
        assert not PRIVATE_MEMBERS & row.public_jwk.keys()
        assert row.sealed and row.sealed.count(".") == 4  # a compact JWE (RFC 7516 §7.1)
        header = json.loads(base64.urlsafe_b64decode(row.sealed.split(".")[0] + "=="))
        assert header == {"alg": "A256KW", "enc": "A256GCM", "cty": "jwk+json"}
        assert '"d"' not in row.sealed


def test_jwks_has_public_keys_only(store: KeyStore) -> None:
    keys = store.public_jwks()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_MEMBERS & key.keys()
        assert key["use"] == "sig" and key["kid"]
    assert json.loads(store.jwks_document()) == store.public_jwks()


def test_one_key_per_algorithm_with_its_kid(store: KeyStore) -> None:
    es, rs = store.signing_key("ES256"), store.signing_key("RS256")
    assert es.kid != rs.kid
    by_kid = {k["kid"]: k for k in store.public_jwks()["keys"]}
    assert by_kid[es.kid]["kty"] == "EC" and by_kid[es.kid]["crv"] == "P-256"
    assert by_kid[es.kid]["alg"] == "ES256"
    assert by_kid[rs.kid]["kty"] == "RSA" and by_kid[rs.kid]["alg"] == "RS256"
    with pytest.raises(KeyStoreError):
        store.signing_key("HS256")


def test_an_empty_schedule_is_a_clear_error(tmp_path: Path, database: Database, clock: Clock) -> None:
    s = new_store(database, keys_folder(tmp_path / "keys"))
    assert s.initialise(tmp_path / "keys" / "signing" / "index.json", create=False) is None
    with pytest.raises(KeyStoreError, match="idp init"):
        s.check()


def test_rotation_publishes_before_use_and_retires_after_grace(tmp_path: Path, store: KeyStore, database: Database,
                                                               clock: Clock) -> None:
    old = store.signing_key("ES256").kid
    new_kids = rotate(store, now=T0)
    assert len(new_kids) == 2 and old not in new_kids

    # Right after rotation: the new key is published, the old one still signs.
    fresh = new_store(database, tmp_path / "keys")
    assert set(new_kids) <= kids(fresh.public_jwks())
    assert old in kids(fresh.public_jwks())
    assert fresh.signing_key("ES256").kid == old

    # Just before the grace period ends, nothing changes.
    clock.now = T0 + GRACE - 1
    assert fresh.signing_key("ES256").kid == old

    # After the grace period the new key signs; the old one is still published.
    clock.now = T0 + GRACE
    new = fresh.signing_key("ES256").kid
    assert new in new_kids
    assert {new, old} <= kids(fresh.public_jwks())
    assert old in {k.kid for k in fresh.verification_keys().keys}

    # Once every token the old key signed has expired, it is no longer published.
    clock.now = T0 + GRACE + MAX_TOKEN_LIFETIME_SECONDS
    assert old not in kids(fresh.public_jwks())
    assert old not in {k.kid for k in fresh.verification_keys().keys}
    assert set(new_kids) <= kids(fresh.public_jwks())

    # The next rotation drops the retired keys from the schedule.
    rotate(store, now=int(clock.now))
    with database.sessions() as session:
        left = set(session.scalars(select(SigningKey.kid)))
    assert old not in left and new in left


def test_a_rotation_within_anothers_grace_period_wins(store: KeyStore, clock: Clock) -> None:
    """Two rotations in a row (the second with a shorter grace): once the second's keys may
    sign they keep signing, even after the first's grace period ends; all stay published."""
    first = rotate(store, grace=100, now=T0)
    clock.now = T0 + 10
    second = rotate(store, grace=31, now=T0 + 10)
    clock.now = T0 + 41
    assert store.signing_key("ES256").kid in second
    clock.now = T0 + 100
    assert store.signing_key("ES256").kid in second and store.signing_key("RS256").kid in second
    assert set(first) | set(second) <= kids(store.public_jwks())


def test_another_instance_sees_a_rotation_within_its_refresh_interval(tmp_path: Path, store: KeyStore,
                                                                      database: Database, clock: Clock) -> None:
    """Instance B (its own copy of the keys folder, the same database) learns of a rotation
    made by A at its next version check, and can sign with the new key: it unseals it."""
    b_folder = tmp_path / "b-keys"
    shutil.copytree(tmp_path / "keys", b_folder)
    b = new_store(database, b_folder)
    before = kids(b.public_jwks())
    new_kids = rotate(store, grace=60, now=T0)
    assert kids(b.public_jwks()) == before  # not re-read yet
    clock.now = T0 + REFRESH
    assert set(new_kids) <= kids(b.public_jwks())
    clock.now = T0 + 60
    assert b.signing_key("ES256").kid in new_kids and b.signing_key("RS256").kid in new_kids
    assert b.unreachable() == {}


def test_the_schedule_is_read_by_version_only(store: KeyStore, database: Database, clock: Clock) -> None:
    """Between changes each refresh reads one integer; the JWKS is serialised once per version."""
    document = store.jwks_document()
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql))
    for step in range(1, 4):
        clock.now = T0 + step * REFRESH
        assert store.jwks_document() is document
    assert len(statements) == 3 and all("signing_key_schedule" in sql and "signing_keys " not in sql
                                        for sql in statements), statements
    statements.clear()
    assert store.jwks_document() is document  # within the interval: no statement at all
    assert statements == []


def test_a_foreign_keys_folder_cannot_sign_and_is_not_ready(tmp_path: Path, store: KeyStore, database: Database,
                                                            clock: Clock) -> None:
    """An instance whose keys folder is not the deployment's cannot unseal the keys: it
    refuses to start (check) rather than sign with anything else."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "pairwise.salt").write_bytes(b"t" * 32)
    other = new_store(database, foreign)
    assert set(other.unreachable()) == kids(store.public_jwks())
    assert "pairwise.salt" in next(iter(other.unreachable().values()))
    with pytest.raises(KeyStoreError, match="cannot reach the private half"):
        other.check()
    assert kids(other.public_jwks()) == kids(store.public_jwks())  # it still publishes what others sign with


def test_a_row_whose_sealed_key_is_another_keys_is_refused(tmp_path: Path, store: KeyStore, database: Database,
                                                           clock: Clock) -> None:
    es, rs = store.signing_key("ES256").kid, store.signing_key("RS256").kid
    with database.transaction() as session:
        sealed = session.get(SigningKey, rs).sealed
        session.get(SigningKey, es).sealed = sealed
        session.execute(update(SigningKeySchedule).values(version=SigningKeySchedule.version + 1))
    fresh = new_store(database, tmp_path / "keys")
    assert set(fresh.unreachable()) == {es}
    with pytest.raises(KeyStoreError, match=es):
        fresh.signing_key("ES256")


def legacy_keys(folder: Path, schedule: list[tuple[str, int, int, int | None]]) -> list[dict]:
    """A keys folder as earlier versions left it: ``signing/<kid>.json`` private JWKs named
    in ``signing/index.json`` with their schedule (alg, created_at, use_after, retire_after)."""
    backend = FileKeyBackend(keys_folder(folder))
    (folder / "signing").mkdir(exist_ok=True)
    index = []
    for alg, created_at, use_after, retire_after in schedule:
        key, _ = backend.generate_signing_key(alg)
        (folder / "signing" / f"{key.kid}.json").write_text(json.dumps(key.as_dict(private=True)))
        index.append({"kid": key.kid, "alg": alg, "created_at": created_at, "use_after": use_after,
                      "retire_after": retire_after})
    (folder / "signing" / "index.json").write_text(json.dumps(index))
    return index


def test_an_earlier_versions_index_is_imported_once(tmp_path: Path, database: Database, clock: Clock) -> None:
    """``keys/signing/index.json`` and its key files (before the schedule moved into the
    database) become the schedule, with the same kids, times and keys."""
    folder = tmp_path / "keys"
    index = legacy_keys(folder, [("ES256", T0 - 10, T0 - 10, T0 + 100), ("RS256", T0 - 10, T0 - 10, None),
                                 ("ES256", T0 - 10, T0 + 50, None)])
    s = new_store(database, folder)
    assert s.initialise(folder / "signing" / "index.json", create=False).startswith("ID token signing keys imported")
    assert s.initialise(folder / "signing" / "index.json", create=False) is None
    assert kids(s.public_jwks()) == {item["kid"] for item in index}
    assert s.signing_key("ES256").kid == index[0]["kid"]
    clock.now = T0 + 50
    assert s.signing_key("ES256").kid == index[2]["kid"]
    clock.now = T0 + 100
    assert index[0]["kid"] not in kids(s.public_jwks())
    rotate(s, now=T0 + 100)  # a retired key's old file goes with it
    assert not (folder / "signing" / f"{index[0]['kid']}.json").exists()


def test_db_upgrade_and_serve_import_an_earlier_deployment(tmp_path: Path) -> None:
    """The operator's upgrade: ``idp db upgrade`` imports the old keys (and says so); the
    start of an https ``idp serve`` (no key creation outside development) does as well."""
    now = int(time.time())
    for step, folder in (("db upgrade", tmp_path / "one"), ("serve", tmp_path / "two")):
        index = legacy_keys(folder / "keys", [("ES256", now, now, None), ("RS256", now, now, None)])
        with fresh_database(folder / "db") as url:
            env = {"IDP_KEYS_DIR": str(folder / "keys"), "IDP_DATABASE_URL": url, "IDP_SECRET_KEY": "s" * 48,
                   "IDP_ISSUER": "https://id.example.jp", "IDP_INSTANCE_DIR": str(folder / "instance")}
            if step == "db upgrade":
                upgraded = subprocess.run(idp_command("db", "upgrade"), env=command_env(env), capture_output=True,
                                          text=True, timeout=120)
                assert upgraded.returncode == 0, upgraded.stderr
                assert "ID token signing keys imported from" in upgraded.stdout
            else:
                done = initialise(Settings.from_env(env), create_keys=False)
                assert any(item.startswith("ID token signing keys imported") for item in done), done
            db = Database(url)
            try:
                s = KeyStore(db, FileKeyBackend(folder / "keys"))
                assert kids(s.public_jwks()) == {item["kid"] for item in index}
                s.check()
            finally:
                db.dispose()


def test_a_failed_rotation_leaves_no_key_behind(store: KeyStore, database: Database, clock: Clock,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []
    monkeypatch.setattr(store.backend, "delete_signing_key", deleted.append)
    before = kids(store.public_jwks())
    with pytest.raises(RuntimeError, match="audit write failed"):
        with database.transaction() as session:
            made = store.rotate(session, grace=GRACE, now=T0)
            raise RuntimeError("audit write failed")
    assert sorted(deleted) == sorted(made)
    clock.now = T0 + REFRESH
    assert kids(store.public_jwks()) == before


def test_a_backend_failure_is_retried_at_the_next_refresh(tmp_path: Path, store: KeyStore, database: Database,
                                                         clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key the backend could not hand out once (an HSM restarting) is tried again at the
    next refresh, without waiting for the schedule to change."""
    fresh = new_store(database, tmp_path / "keys")
    real = fresh.backend.signing_key

    def failing(kid: str, sealed: str | None):  # type: ignore[no-untyped-def]
        raise KeyBackendError("PKCS#11 token: DeviceRemoved")

    monkeypatch.setattr(fresh.backend, "signing_key", failing)
    assert len(fresh.unreachable()) == 2
    monkeypatch.setattr(fresh.backend, "signing_key", real)
    clock.now = T0 + REFRESH
    assert fresh.unreachable() == {}
    fresh.check()


def test_concurrent_rotations_take_turns(tmp_path: Path, store: KeyStore, database: Database, clock: Clock) -> None:
    """Two `idp keys rotate` at once (two machines): the second waits for the first to commit,
    then retires its keys, so exactly one key per algorithm is left without a retirement."""
    import threading

    first_in = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with database.transaction() as session:
                store.rotate(session, grace=GRACE, now=T0)
                first_in.set()
                time.sleep(0.5)  # holds the schedule while the second one starts
        except BaseException as exc:
            errors.append(exc)
            first_in.set()

    runner = threading.Thread(target=first)
    runner.start()
    first_in.wait(10)
    other = new_store(database, tmp_path / "keys")
    with database.transaction() as session:
        second = other.rotate(session, grace=GRACE, now=T0 + 1)
    runner.join(10)
    assert errors == []
    with database.sessions() as session:
        current = session.execute(select(SigningKey.kid, SigningKey.alg).where(SigningKey.retire_after.is_(None))).all()
        version = session.scalar(select(SigningKeySchedule.version))
    assert sorted(kid for kid, _ in current) == sorted(second) and sorted(alg for _, alg in current) == ["ES256", "RS256"]
    assert version == 3  # created, then two rotations
