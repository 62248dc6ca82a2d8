"""Small promises: the SQLite files are private, and a backup-eligibility change between
enrolment and login is refused and audited (WebAuthn L3 §6.1.3)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.support.lifecycle import attempt_login, audit_events, audit_count, card, login, refused, rp


@pytest.mark.sqlite_only
def test_sqlite_database_and_its_wal_and_shm_files_are_0600(idp) -> None:
    device = idp.wallet().enroll(card(idp))  # some writes, so WAL and SHM exist
    assert login(idp, rp(idp), device).sub
    path = Path(idp.settings.database_url.split("///", 1)[-1])
    files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    assert path in files and len(files) == 3, files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, (file, oct(file.stat().st_mode))


@pytest.mark.sqlite_only
def test_an_existing_world_readable_database_is_narrowed(tmp_path) -> None:
    from idp.storage.db import Database

    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    database = Database(f"sqlite:///{path}")
    try:
        with database.transaction() as session:
            session.connection().exec_driver_sql("CREATE TABLE t (x INTEGER)")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        database.dispose()


def test_backup_eligibility_change_refuses_the_login_with_an_audit_entry(idp) -> None:
    device = idp.wallet().enroll(card(idp))
    client = rp(idp)
    device.authenticator.backup_eligible = True  # the "same" credential now claims to be syncable
    mark = audit_count(idp)
    refused(attempt_login(idp, client, device), "backup_eligibility_changed", status=400)
    assert ("login.failure", "backup_eligibility_changed") in [
        (event, data.get("reason")) for event, data in audit_events(idp, after=mark)]
    device.authenticator.backup_eligible = False
    assert login(idp, client, device).sub  # the genuine authenticator still logs in
