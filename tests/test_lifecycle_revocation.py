"""Revocation end to end over HTTP (issue 4 items 1–2): `idp ca revoke`, login refused at
once, the CRL at /ca/crl and the OCSP responder agree; bad input changes nothing; pkilint
finds no error in what the live trust service publishes."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import update

from idp import audit
from idp.ca import lifecycle
from idp.ca.profile import issue_device_certificate
from idp.storage.models import CrlState, utcnow
from tests.support.lifecycle import (
    attempt_login,
    audit_count,
    audit_events,
    card,
    crl_number,
    crl_reason,
    db,
    device_row,
    fetch_crl,
    login,
    ocsp_status,
    refused,
    rp,
    run_cli,
)
from tests.test_ca import lint_certificate_der, lint_crl_der


@pytest.fixture(scope="module")
def client(idp):
    return rp(idp)


def test_lost_phone_revoked_by_the_operator(idp, client, monkeypatch):
    person = card(idp)
    lost, kept = idp.wallet().enroll(person), idp.wallet().enroll(person)
    sub = login(idp, client, lost).sub
    with requests.Session() as browser:  # a browser session started with the lost phone
        login(idp, client, lost, browser)
        before = fetch_crl(idp)
        assert crl_reason(before, lost.serial) is None
        assert ocsp_status(idp, lost)[0] is ocsp.OCSPCertStatus.GOOD

        result = run_cli(idp, monkeypatch, "ca", "revoke", lost.serial, "--reason", "keyCompromise")
        assert result.code == 0, result
        assert lost.serial in result.out

        # refused at once: a new login, and the session the lost phone started
        refused(attempt_login(idp, client, lost), "certificate_revoked")
        silent = client.start(browser, prompt="none")
        assert "error=login_required" in silent
    after = fetch_crl(idp)
    assert crl_number(after) > crl_number(before)
    assert crl_reason(after, lost.serial) == "keyCompromise"
    status, answer = ocsp_status(idp, lost)
    assert status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is not None and answer.revocation_reason.value == "keyCompromise"
    assert answer.revocation_time_utc == after.get_revoked_certificate_by_serial_number(
        int(lost.serial, 16)).revocation_date_utc
    # the other phone still works, as the same person (same pairwise sub)
    assert ocsp_status(idp, kept)[0] is ocsp.OCSPCertStatus.GOOD
    assert login(idp, client, kept).sub == sub
    events = [e for e in audit_events(idp) if e[0] == "certificate.revoked" and e[1]["serial"] == lost.serial]
    assert events == [("certificate.revoked", {"serial": lost.serial, "account": device_row(idp, lost.serial).account_id,
                                               "reason": "keyCompromise", "by": "operator"})]


@pytest.mark.parametrize("reason", ["unspecified", "superseded", "affiliationChanged", "cessationOfOperation"])
def test_every_operator_reason_is_on_the_crl(idp, client, monkeypatch, reason):
    device = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", "0x" + device.serial.upper(), "--reason", reason).code == 0
    assert crl_reason(fetch_crl(idp), device.serial) == reason  # unspecified: no reasonCode (RFC 5280 §5.3.1)
    status, answer = ocsp_status(idp, device)
    assert status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is (None if reason == "unspecified" else x509.ReasonFlags(reason))
    refused(attempt_login(idp, client, device), "certificate_revoked")


def _snapshot(idp, serial):
    device = device_row(idp, serial)
    with db(idp) as session:
        state = session.get(CrlState, 1)
        number = state.crl_number if state else None
    return device.state, device.revocation_reason, audit_count(idp), number


@pytest.mark.parametrize("argv, message", [
    (["ca", "revoke", "abcdef0123", "--reason", "keyCompromise"], "no device certificate with serial abcdef0123"),
    (["ca", "revoke", "not-hex", "--reason", "keyCompromise"], "is not a hexadecimal serial number"),
    (["ca", "revoke", "{serial}", "--reason", "lostPhone"], "unknown revocation reason 'lostPhone'"),
    (["ca", "revoke", "{serial}", "--reason", "removeFromCRL"], "unknown revocation reason"),
])
def test_revoke_bad_input_is_one_line_and_changes_nothing(idp, monkeypatch, argv, message):
    device = idp.wallet().enroll(card(idp))
    fetch_crl(idp)
    before = _snapshot(idp, device.serial)
    result = run_cli(idp, monkeypatch, *[a.format(serial=device.serial) for a in argv])
    assert result.code != 0
    assert message in result.error_line
    assert _snapshot(idp, device.serial) == before


def test_revoking_twice_is_refused_and_changes_nothing(idp, monkeypatch):
    device = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "superseded").code == 0
    fetch_crl(idp)
    before = _snapshot(idp, device.serial)
    for reason in ("keyCompromise", "certificateHold"):
        result = run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", reason)
        assert "already revoked" in result.error_line
    assert _snapshot(idp, device.serial) == before
    assert crl_reason(fetch_crl(idp), device.serial) == "superseded"


def test_hold_then_revoke(idp, client, monkeypatch):
    device = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "certificateHold").code == 0
    assert device_row(idp, device.serial).state == "suspended"
    assert crl_reason(fetch_crl(idp), device.serial) == "certificateHold"
    status, answer = ocsp_status(idp, device)
    assert status is ocsp.OCSPCertStatus.REVOKED and answer.revocation_reason.value == "certificateHold"
    refused(attempt_login(idp, client, device), "certificate_suspended")
    assert "already suspended" in run_cli(idp, monkeypatch, "ca", "revoke", device.serial,
                                          "--reason", "certificateHold").error_line
    # a held certificate can still be revoked for good; the CRL entry then says why
    assert run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "keyCompromise").code == 0
    assert crl_reason(fetch_crl(idp), device.serial) == "keyCompromise"
    refused(attempt_login(idp, client, device), "certificate_revoked")


def test_pending_certificate_is_never_good_and_never_logs_in(idp, client, monkeypatch):
    pending = idp.wallet().enroll(card(idp), activate=False)
    serial = format(pending.certificate.serial_number, "x")
    assert device_row(idp, serial).state == "pending"
    assert ocsp_status(idp, pending)[0] is not ocsp.OCSPCertStatus.GOOD
    refused(attempt_login(idp, client, pending), "certificate_pending")
    # a pending certificate can be revoked; it is then on the CRL and revoked in OCSP
    assert run_cli(idp, monkeypatch, "ca", "revoke", serial, "--reason", "cessationOfOperation").code == 0
    assert crl_reason(fetch_crl(idp), serial) == "cessationOfOperation"
    assert ocsp_status(idp, pending)[0] is ocsp.OCSPCertStatus.REVOKED


def test_revocation_and_its_audit_entry_are_one_transaction(idp, client, monkeypatch):
    device = idp.wallet().enroll(card(idp))
    fetch_crl(idp)
    before = _snapshot(idp, device.serial)
    real = audit.record

    def failing(session, event, **data):
        if event == "certificate.revoked":
            raise RuntimeError("disk full")
        return real(session, event, **data)

    monkeypatch.setattr(audit, "record", failing)
    result = run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "keyCompromise")
    assert "disk full" in result.error_line
    monkeypatch.setattr(audit, "record", real)
    assert _snapshot(idp, device.serial) == before
    assert login(idp, client, device).sub


def test_crl_is_cached_until_a_change_and_resigned_before_next_update(idp, monkeypatch):
    first = fetch_crl(idp)
    second = fetch_crl(idp)
    assert crl_number(second) == crl_number(first)  # nothing changed: the same CRL
    assert first.next_update_utc - first.last_update_utc == lifecycle.CRL_LIFETIME
    # nextUpdate draws near (simulated): re-signed with a higher number
    with db(idp) as session:
        session.execute(update(CrlState).values(next_update=utcnow() + lifecycle.CRL_REFRESH_BEFORE
                                                - timedelta(minutes=1)))
    third = fetch_crl(idp)
    assert crl_number(third) == crl_number(second) + 1
    assert third.next_update_utc >= second.next_update_utc  # (the same second is possible)
    # any lifecycle change (here an activation) re-signs it too
    idp.wallet().enroll(card(idp))
    assert crl_number(fetch_crl(idp)) == crl_number(third) + 1


def test_pkilint_finds_no_error_in_what_the_live_trust_service_publishes(idp, monkeypatch):
    """The device certificate from a real HTTP enrolment, /ca/certificate and /ca/crl.

    pkilint's URI check refuses a host without a public suffix ("localhost"), but accepts
    the 127.0.0.1 these servers run on; a production issuer is an https host name anyway.
    """
    device = idp.wallet().enroll(card(idp))
    assert lint_certificate_der(device.certificate_der) == []
    assert lint_certificate_der(requests.get(idp.base_url + "/ca/certificate", timeout=10).content) == []
    revoked = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", revoked.serial, "--reason", "keyCompromise").code == 0
    der = requests.get(idp.base_url + "/ca/crl", timeout=10).content
    assert crl_reason(fetch_crl(idp), revoked.serial) == "keyCompromise"
    assert lint_crl_der(der) == []


def test_pkilint_on_localhost_urls_flags_only_the_host_name(idp):
    """The development issuer http://localhost:8000 puts localhost URLs in certificates.

    pkilint reports them as `pkix.invalid_uri_syntax` ERRORs although RFC 3986 allows them
    (its check wants a host with a public suffix). That is the only finding: the profile is
    otherwise clean, and 127.0.0.1 (the test servers) or a real https host passes.
    """
    now = dt.datetime.now(dt.timezone.utc)
    base = "http://localhost:8000"
    certificate = issue_device_certificate(
        idp.services().ca, public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), serial_number=7,
        account_ref="acct-localhost", not_before=now, not_after=now + dt.timedelta(days=1),
        crl_url=base + "/ca/crl", ocsp_url=base + "/ca/ocsp", ca_issuers_url=base + "/ca/certificate",
        hardware_attested=False)
    findings = lint_certificate_der(certificate.public_bytes(Encoding.DER))
    assert len(findings) == 3
    assert all(f.startswith("pkix.invalid_uri_syntax (ERROR)") and "http://localhost:8000/ca/" in f for f in findings)
