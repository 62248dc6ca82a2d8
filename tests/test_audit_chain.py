"""The audit log of a live server (issue 4 item 7): every lifecycle event is recorded, without
personal attributes; `idp audit verify` finds an edited, deleted, reordered or truncated
entry made with SQL in the server's database and names it; each step commits with its
entry or not at all; concurrent writers keep one intact chain."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, insert, select, text, update

from idp.privacy import contains_individual_number
from idp import audit
from idp.proofing.demo_card import TestJpkiCA
from idp.storage.models import AuditEntry, Enrollment
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import (
    attempt_login,
    audit_count,
    audit_events,
    card,
    db,
    device_row,
    login,
    rp,
    run_cli,
)
from tests.support.wallet import WalletError

NAME, ADDRESS, BIRTH = "監査　一郎", "群馬県前橋市監査町一丁目二番三号", "419750505"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("audit-idp"), jpki_ca)


@pytest.fixture(scope="module")
def history(server, tmp_path_factory):
    """One of every recorded lifecycle event, driven over HTTP and the operator CLI."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        person = card(server, name=NAME, address=ADDRESS, date_of_birth=BIRTH)
        client = rp(server)
        phone = server.wallet().enroll(person)
        login(server, client, phone)
        attempt_login(server, client, phone, sign_with=ec.generate_private_key(ec.SECP256R1()))
        lost, cloned, held = (server.wallet().enroll(person) for _ in range(3))
        assert run_cli(server, monkeypatch, "ca", "revoke", lost.serial, "--reason", "keyCompromise").code == 0
        assert run_cli(server, monkeypatch, "ca", "revoke", held.serial, "--reason", "certificateHold").code == 0
        attempt_login(server, client, cloned, counter=1)
        for _ in range(5):
            attempt_login(server, client, phone, sign_with=ec.generate_private_key(ec.SECP256R1()))
        renewed = card(server, name=NAME, address=ADDRESS, date_of_birth=BIRTH)
        assert run_cli(server, monkeypatch, "jpki", "link", f"{person.serial_number:x}",
                       f"{renewed.serial_number:x}").code == 0
        assert run_cli(server, monkeypatch, "keys", "rotate", "--grace", "2").code == 0
        return {"card": person, "renewed": renewed, "phone": phone}
    finally:
        monkeypatch.undo()


EXPECTED = {
    "client.registered", "account.created", "identity.proven", "certificate.issued",
    "certificate.activation_signed", "certificate.activated", "login.success", "login.failure",
    "consent.granted", "certificate.revoked", "certificate.suspended", "device.clone_suspected",
    "device.locked", "jpki.linked", "keys.rotated",
}


def test_every_lifecycle_step_is_recorded(server, history, monkeypatch):
    events = {event for event, _ in audit_events(server)}
    assert EXPECTED <= events, EXPECTED - events
    result = run_cli(server, monkeypatch, "audit", "verify")
    assert result.code == 0 and "audit chain intact" in result.out, result


def test_no_personal_attributes_and_no_individual_number_in_entries(server, history):
    with db(server) as session:
        rows = [(e.event, json.dumps(e.data, ensure_ascii=False)) for e in session.scalars(select(AuditEntry))]
    forbidden = [NAME, NAME.split("\u3000")[0], ADDRESS, BIRTH, "1975-05-05", "19750505"]
    serials = [history["card"].serial_number, history["renewed"].serial_number]
    forbidden += [format(s, "x") for s in serials] + [str(s) for s in serials]
    for event, data in rows:
        for value in forbidden:
            assert value.lower() not in data.lower(), (event, data)
        # A standalone individual-number-shaped value (hex serials may contain digit runs by chance).
        assert not contains_individual_number(json.loads(data)), (event, data)


# --- tampering with SQL in the server's database --------------------------------------------


def verify(server, monkeypatch) -> str:
    audit.flush_anchor()  # as a second after the last commit: the anchor is written in batches
    result = run_cli(server, monkeypatch, "audit", "verify")
    return result.error_line if result.code else "intact"


@pytest.fixture
def table(server, history):
    """The rows as they were; restored after each tampering test."""
    engine = server.services().db.engine
    with engine.connect() as connection:
        saved = [dict(row._mapping) for row in connection.execute(select(AuditEntry.__table__))]
    yield engine
    with engine.begin() as connection:
        connection.execute(delete(AuditEntry.__table__))
        connection.execute(insert(AuditEntry.__table__), saved)


def test_intact_before_tampering(server, table, monkeypatch):
    assert verify(server, monkeypatch) == "intact"


def test_edited_entry_is_named(server, table, monkeypatch):
    with table.begin() as connection:
        seq = connection.scalar(text("SELECT seq FROM audit_log WHERE event = 'certificate.revoked'"))
        connection.execute(update(AuditEntry.__table__).where(AuditEntry.seq == seq)
                           .values(data={"serial": "00", "reason": "superseded"}))
    line = verify(server, monkeypatch)
    assert f"broken at entry {seq}:" in line and "certificate.revoked" in line and "edited" in line


def test_edited_event_name_is_named(server, table, monkeypatch):
    with table.begin() as connection:
        connection.execute(text("UPDATE audit_log SET event = 'login.success' WHERE seq = 3"))
    assert "broken at entry 3:" in verify(server, monkeypatch)


def test_deleted_entry_is_named(server, table, monkeypatch):
    with table.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE seq = 5"))
    line = verify(server, monkeypatch)
    assert "broken at entry 5:" in line and "missing" in line


def test_reordered_entries_are_named(server, table, monkeypatch):
    with table.begin() as connection:
        connection.execute(text("UPDATE audit_log SET seq = -1 WHERE seq = 7"))
        connection.execute(text("UPDATE audit_log SET seq = 7 WHERE seq = 8"))
        connection.execute(text("UPDATE audit_log SET seq = 8 WHERE seq = -1"))
    assert "broken at entry 7:" in verify(server, monkeypatch)


def test_deleted_newest_entries_are_found_by_the_head_anchor(server, table, monkeypatch):
    with table.begin() as connection:
        last = connection.scalar(select(func.max(AuditEntry.seq)))
        connection.execute(delete(AuditEntry.__table__).where(AuditEntry.seq >= last - 1))
    line = verify(server, monkeypatch)
    assert f"broken at entry {last - 1}:" in line and f"records entry {last}" in line


def test_rewritten_chain_is_found_by_the_head_anchor(server, table, monkeypatch):
    """Someone with database access edits an entry and recomputes every later hash."""
    with db(server) as session:
        entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        prev = audit.GENESIS
        for entry in entries:
            if entry.event == "certificate.revoked":
                entry.data = {**entry.data, "reason": "superseded"}
            entry.prev_hash = prev
            entry.entry_hash = audit._digest(prev, entry.seq, entry.at.isoformat(), entry.event, entry.data)
            prev = entry.entry_hash
        last = entries[-1].seq
    line = verify(server, monkeypatch)
    assert f"broken at entry {last}:" in line and "head anchor" in line and "rewritten" in line


def test_head_anchor_follows_every_commit_within_a_second(server, history):
    with db(server) as session:
        heads = {chain: audit.Head(seq, entry_hash) for chain, seq, entry_hash in session.execute(
            select(AuditEntry.chain, AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq))}
    deadline = time.monotonic() + 5 * audit.ANCHOR_INTERVAL
    while audit.read_anchor(server.settings.keys_dir) != heads and time.monotonic() < deadline:
        time.sleep(0.1)
    assert audit.read_anchor(server.settings.keys_dir) == heads


# --- one transaction per step --------------------------------------------------------------------


def test_a_crash_in_activation_leaves_the_previous_state(server, history, monkeypatch):
    wallet = server.wallet()
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    finished = wallet.finish(start, history["renewed"], authenticator)
    serial = format(x509.load_der_x509_certificate(finished.certificate_der).serial_number, "x")
    before = audit_count(server)
    real = audit.record

    def failing(session, event, **data):
        if event == "certificate.activated":
            raise RuntimeError("crash")
        return real(session, event, **data)

    monkeypatch.setattr(audit, "record", failing)
    with pytest.raises(WalletError) as crashed:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        credential_id=finished.credential_id)
    assert crashed.value.status == 500 and crashed.value.error == "server_error"
    monkeypatch.setattr(audit, "record", real)
    assert device_row(server, serial).state == "pending"
    assert audit_count(server) == before
    with db(server) as session:
        assert session.get(Enrollment, finished.enrollment_id).state == "finished"
    # nothing half-done: the same activation now succeeds
    answer = wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                             credential_id=finished.credential_id)
    assert answer["status"] == "active"


def test_a_crash_while_suspending_a_clone_leaves_the_certificate_active(server, monkeypatch):
    client = rp(server)
    phone = server.wallet().enroll(card(server))
    login(server, client, phone)
    real = audit.record

    def failing(session, event, **data):
        if event == "device.clone_suspected":
            raise RuntimeError("crash")
        return real(session, event, **data)

    monkeypatch.setattr(audit, "record", failing)
    outcome = attempt_login(server, client, phone, counter=1)
    assert isinstance(outcome, WalletError) and outcome.status == 500
    monkeypatch.setattr(audit, "record", real)
    assert device_row(server, phone.serial).state == "active"


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_writers_keep_one_intact_chain(server, history, monkeypatch):
    before = audit_count(server)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with server.services().db.transaction() as session:
                    audit.record(session, "test.concurrent", writer=n, i=i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert audit_count(server) == before + 60
    assert verify(server, monkeypatch) == "intact"
