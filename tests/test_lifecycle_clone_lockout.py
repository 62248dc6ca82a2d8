"""Clone detection and lock-out (issue 4 items 5–6), end to end over HTTP.

A sign-counter regression refuses the login, suspends the certificate (certificateHold on
the CRL and in OCSP) and is audited; only a fresh proof with the card re-activates it.
Consecutive failed signatures lock the credential for 1, 4, 16… minutes (at most a day);
the lock ends by itself. Time passing is simulated by moving ``locked_until`` back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from idp.device.assertions import FAILURES_BEFORE_LOCK, MAX_LOCK, lock_period
from idp.storage.models import utcnow
from tests.support.lifecycle import (
    attempt_login,
    audit_count,
    audit_events,
    card,
    crl_reason,
    device_row,
    fetch_crl,
    lock_state,
    login,
    ocsp_status,
    refused,
    rp,
    set_lock_state,
)


@pytest.fixture(scope="module")
def client(idp):
    return rp(idp)


def test_counter_regression_suspends_until_the_person_proves_again(idp, client):
    person = card(idp)
    phone = idp.wallet().enroll(person)  # the activation signed with counter 1
    other = idp.wallet().enroll(person)
    sub = login(idp, client, phone).sub  # counter 2
    mark = audit_count(idp)

    clone = refused(attempt_login(idp, client, phone, counter=2), "counter_regression")  # a copy of the key
    assert "cloned" in clone.description and "prove" in clone.description
    assert device_row(idp, phone.serial).state == "suspended"
    events = audit_events(idp, after=mark)
    assert ("device.clone_suspected", phone.serial) in [(e, d.get("serial")) for e, d in events]
    assert ("login.failure", "counter_regression") in [(e, d.get("reason")) for e, d in events]
    status, answer = ocsp_status(idp, phone)
    assert status is ocsp.OCSPCertStatus.REVOKED and answer.revocation_reason.value == "certificateHold"
    assert crl_reason(fetch_crl(idp), phone.serial) == "certificateHold"

    # the genuine phone, with a higher counter, is refused too until a fresh proof
    refused(attempt_login(idp, client, phone), "certificate_suspended")
    assert login(idp, client, other).sub == sub  # only that device is held

    # proving again with the card (a fresh enrolment) re-activates it
    idp.wallet().enroll(person)
    assert device_row(idp, phone.serial).state == "active"
    assert ocsp_status(idp, phone)[0] is ocsp.OCSPCertStatus.GOOD
    assert crl_reason(fetch_crl(idp), phone.serial) is None
    assert "certificate.reinstated" in [e for e, _ in audit_events(idp, after=mark)]
    assert login(idp, client, phone).sub == sub


def _expire_lock(idp, serial: str) -> None:
    set_lock_state(idp, serial, locked_until=utcnow() - timedelta(seconds=1))


def _fail_until_locked(idp, client, phone, wrong_key) -> datetime:
    for attempt in range(1, FAILURES_BEFORE_LOCK + 1):
        refused(attempt_login(idp, client, phone, sign_with=wrong_key), "bad_signature")
        locked_until = lock_state(idp, phone.serial).locked_until
        assert (locked_until is not None and locked_until > utcnow()) == (attempt == FAILURES_BEFORE_LOCK)
    return locked_until


def test_repeated_failures_lock_for_growing_periods_then_unlock(idp, client):
    phone = idp.wallet().enroll(card(idp))
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    mark = audit_count(idp)
    for minutes in (1, 4, 16):
        started = utcnow()
        locked_until = _fail_until_locked(idp, client, phone, wrong_key)
        assert timedelta(minutes=minutes) <= locked_until - started <= timedelta(minutes=minutes, seconds=5)
        # while locked even the right key is refused, with the time it ends and Retry-After
        locked = refused(attempt_login(idp, client, phone), "credential_locked", status=423)
        assert locked_until.isoformat().replace("+00:00", "Z") in locked.description
        assert 0 < int(locked.retry_after) <= minutes * 60 + 1
        _expire_lock(idp, phone.serial)
    events = audit_events(idp, after=mark)
    locks = [d for e, d in events if e == "device.locked"]
    assert [d["minutes"] for d in locks] == [1, 4, 16] and {d["serial"] for d in locks} == {phone.serial}
    failures = [d["reason"] for e, d in events if e == "login.failure"]
    assert failures.count("bad_signature") == 3 * FAILURES_BEFORE_LOCK
    assert failures.count("credential_locked") == 3

    # the lock ended by itself: the right key logs in and the counters start again
    assert login(idp, client, phone).sub
    row = lock_state(idp, phone.serial)
    assert (row.failed_attempts, row.lock_count, row.locked_until) == (0, 0, None)


def test_lock_period_never_exceeds_a_day(idp, client):
    assert [lock_period(n) for n in range(6)] == [timedelta(minutes=m) for m in (1, 4, 16, 64, 256, 1024)]
    assert lock_period(6) == lock_period(10_000) == MAX_LOCK == timedelta(days=1)
    phone = idp.wallet().enroll(card(idp))
    set_lock_state(idp, phone.serial, lock_count=500)  # an attacker kept it locked many times over
    started = utcnow()
    locked_until = _fail_until_locked(idp, client, phone, ec.generate_private_key(ec.SECP256R1()))
    assert timedelta(hours=23, minutes=59) <= locked_until - started <= timedelta(days=1, seconds=5)


def test_a_success_resets_the_failure_count(idp, client):
    phone = idp.wallet().enroll(card(idp))
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        refused(attempt_login(idp, client, phone, sign_with=wrong_key), "bad_signature")
    assert login(idp, client, phone).sub
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        refused(attempt_login(idp, client, phone, sign_with=wrong_key), "bad_signature")
    assert lock_state(idp, phone.serial).locked_until is None
    assert login(idp, client, phone).sub
