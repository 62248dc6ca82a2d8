"""The login assertion checks first and writes after (idp.web.login ``assertion``).

One statement reads the transaction and the device; the signature is verified on that read;
then compare-and-sets write the outcome. These tests change the device between the read and
the write (as a concurrent login or an operator would) and show that the outcome is the one
the two would have had one after the other: a counter that moved on past this signature's is
a regression (the key may be cloned), one that stayed below it is accepted; a certificate
suspended meanwhile refuses the login. They also pin the statements a login sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import has_request_context, request
from sqlalchemy import event, update

from idp.storage.models import AuthorizationTransaction, DeviceCertificate
from idp.web import login as login_view
from tests.support.lifecycle import attempt_login, audit_events, audit_count, card, db, device_row, refused, rp


@pytest.fixture(scope="module")
def client(idp):
    return rp(idp)


@contextmanager
def between_read_and_write(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``change`` (committed in its own transaction) once, right after the assertion
    endpoint has read and checked, before it writes; yields the list of calls made."""
    calls: list[int] = []
    checked = login_view.check_assertion

    def check_then_change(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        result = checked(*args, **kwargs)
        if len(calls) == 1:
            change()
        return result

    monkeypatch.setattr(login_view, "check_assertion", check_then_change)
    yield calls


def set_device(idp, serial: str, **values: Any) -> None:
    with db(idp) as session:
        session.execute(update(DeviceCertificate).where(DeviceCertificate.serial == serial).values(**values))


def test_a_counter_that_moved_past_this_signature_is_a_regression(idp, client, monkeypatch):
    phone = idp.wallet().enroll(card(idp))
    mark, failed_before = audit_count(idp), failed_transactions(idp, "counter_regression")
    with between_read_and_write(monkeypatch, lambda: set_device(idp, phone.serial, sign_count=50)) as calls:
        outcome = attempt_login(idp, client, phone, counter=20)
    refused(outcome, "counter_regression")
    assert len(calls) == 2  # checked again on the row as it is now
    device = device_row(idp, phone.serial)
    assert device.state == "suspended" and device.sign_count == 50
    events = [(e, d.get("reason")) for e, d in audit_events(idp, after=mark)]
    assert ("login.failure", "counter_regression") in events and ("login.success", None) not in events
    assert failed_transactions(idp, "counter_regression") == failed_before + 1


def failed_transactions(idp, failure: str) -> int:
    with db(idp) as session:
        return session.query(AuthorizationTransaction).filter_by(failure=failure).count()


def test_a_counter_still_below_this_signature_is_accepted(idp, client, monkeypatch):
    phone = idp.wallet().enroll(card(idp))
    with between_read_and_write(monkeypatch, lambda: set_device(idp, phone.serial, sign_count=10)) as calls:
        outcome = attempt_login(idp, client, phone, counter=20)
    assert isinstance(outcome, dict), outcome
    assert len(calls) == 2
    device = device_row(idp, phone.serial)
    assert device.state == "active" and device.sign_count == 20


def test_a_certificate_suspended_meanwhile_refuses_the_login(idp, client, monkeypatch):
    phone = idp.wallet().enroll(card(idp))
    mark = audit_count(idp)
    with between_read_and_write(monkeypatch, lambda: set_device(idp, phone.serial, state="suspended")):
        outcome = attempt_login(idp, client, phone)
    refused(outcome, "certificate_suspended")
    assert ("login.success", None) not in [(e, d.get("reason")) for e, d in audit_events(idp, after=mark)]


def test_a_login_without_interference_checks_once(idp, client, monkeypatch):
    phone = idp.wallet().enroll(card(idp))
    with between_read_and_write(monkeypatch, lambda: None) as calls:
        assert isinstance(attempt_login(idp, client, phone), dict)
    assert len(calls) == 1


def test_the_assertion_reads_once_and_writes_only_after_checking(idp, client):
    """One read for the transaction and its device, one compare-and-set on the transaction;
    nothing is written before the signature was checked, and a refused signature's first
    write is the transaction's compare-and-set (only the request that takes it records)."""
    phone = idp.wallet().enroll(card(idp))
    statements: list[str] = []

    def record(conn, cursor, sql, *args):
        if has_request_context() and request.path == "/login/assertion":
            statements.append(" ".join(sql.split())[:40])

    engine = idp.services().db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert isinstance(attempt_login(idp, client, phone), dict)
        good = list(statements)
        statements.clear()
        refused(attempt_login(idp, client, phone, counter=0), "counter_regression")
        bad = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert good[0].startswith("SELECT authorization_transactions"), good
    assert not any(s.startswith("SELECT authorization_transactions") for s in good[1:]), good
    assert good[1].startswith("UPDATE device_certificates"), good  # the first write, after the check
    assert sum(s.startswith("UPDATE authorization_transactions") for s in good) == 1, good
    assert bad[0].startswith("SELECT") and bad[1].startswith("UPDATE authorization_transactions"), bad
