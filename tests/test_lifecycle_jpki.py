"""JPKI revocation (issue 4 item 4): `idp jpki refresh-crls` and the policy of README
"JPKI revocation policy", end to end against a server that reads IDP_JPKI_CRLS.

- any reason: the verified attributes are out of date and not released (UserInfo omits
  them) until the person proves again with the new card certificate, which updates them;
  the revoked card certificate never proves again;
- suspending reasons (keyCompromise, cACompromise, privilegeWithdrawn, certificateHold,
  cessationOfOperation): the devices enrolled with that card are also suspended
  (certificateHold on the CRL and in OCSP) until the re-proof, which reinstates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import select

from idp.proofing.demo_card import TestJpkiCA
from idp.storage.models import Account, JpkiBinding
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import (
    attempt_login,
    audit_count,
    audit_events,
    card,
    crl_reason,
    db,
    device_row,
    enrol_renewal,
    fetch_crl,
    login,
    ocsp_status,
    refused,
    rp,
    run_cli,
)
from tests.support.wallet import WalletError

ATTRIBUTES = {"name", "address", "birthdate", "gender"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    tmp = tmp_path_factory.mktemp("jpki-crl-idp")
    crls = tmp / "jpki-crls"
    crls.mkdir()
    yield from start_idp(tmp, jpki_ca, env={"IDP_JPKI_CRLS": str(crls)})


@pytest.fixture(scope="module")
def client(server):
    return rp(server)


def publish(server: RunningIdP, name: str, entries, *, issuer: TestJpkiCA | None = None) -> Path:
    """J-LIS publishes a CRL: write it where IDP_JPKI_CRLS points."""
    crl = (issuer or server.jpki_ca).crl(entries)
    path = server.settings.jpki_crls / f"{name}.pem"
    path.write_bytes(crl.public_bytes(Encoding.PEM))
    return path


def released(client, token) -> set[str]:
    return set(client.userinfo(token.access_token)) - {"sub"}


def binding_of(server, serial: str) -> JpkiBinding:
    with db(server) as session:
        device = device_row(server, serial)
        binding = session.get(JpkiBinding, device.jpki_binding_id)
        session.expunge(binding)
        return binding


def test_address_change_makes_attributes_out_of_date_until_re_proof(server, client, monkeypatch):
    old_card = card(server)
    phone = server.wallet().enroll(old_card)
    token = login(server, client, phone)
    sub = token.sub
    assert released(client, token) == ATTRIBUTES

    publish(server, "moved", [(old_card.serial_number, x509.ReasonFlags.affiliation_changed)])
    result = run_cli(server, monkeypatch, "jpki", "refresh-crls")
    assert result.code == 0, result
    assert "applied 1 JPKI revocation" in result.out and "0 device certificate(s) suspended" in result.out
    binding = binding_of(server, phone.serial)
    assert binding.revoked_at is not None and binding.revocation_reason == "affiliationChanged"

    # the device still logs in (the card was not compromised), but no attribute is released
    assert device_row(server, phone.serial).state == "active"
    assert ocsp_status(server, phone)[0] is ocsp.OCSPCertStatus.GOOD
    assert released(client, token) == set()  # also for a token issued before the refresh
    stale = login(server, client, phone)
    assert stale.sub == sub and released(client, stale) == set()
    assert not ATTRIBUTES & set(stale.claims)

    # the revoked card never proves again, on any instance (read from the database)
    with pytest.raises(WalletError) as refused_card:
        server.wallet().enroll(old_card)
    assert refused_card.value.error == "jpki_revoked" and "affiliationChanged" in refused_card.value.description

    # re-proof with the new card (joined by the still-active phone) updates the attributes
    new_card = card(server, address="群馬県桐生市織姫町一番一号")
    new_phone = enrol_renewal(server, new_card, cosigner=phone)
    fresh = login(server, client, new_phone)
    assert fresh.sub == sub
    assert released(client, fresh) == ATTRIBUTES
    assert client.userinfo(fresh.access_token)["address"]["formatted"] == "群馬県桐生市織姫町一番一号"

    # refreshing the same CRLs again changes nothing
    again = run_cli(server, monkeypatch, "jpki", "refresh-crls")
    assert again.code == 0 and "applied 0 JPKI revocation" in again.out


@pytest.mark.parametrize("reason", [x509.ReasonFlags.key_compromise, x509.ReasonFlags.cessation_of_operation])
def test_suspending_reason_holds_the_devices_until_re_proof(server, client, monkeypatch, reason):
    old_card = card(server)
    phone, spare = server.wallet().enroll(old_card), server.wallet().enroll(old_card)
    pending = server.wallet().enroll(old_card, activate=False)
    pending_serial = format(pending.certificate.serial_number, "x")
    sub = login(server, client, phone).sub
    publish(server, f"lost-{reason.name}", [(old_card.serial_number, reason)])
    mark = audit_count(server)
    result = run_cli(server, monkeypatch, "jpki", "refresh-crls")
    assert result.code == 0 and "3 device certificate(s) suspended" in result.out, result

    for device in (phone, spare):
        assert device_row(server, device.serial).state == "suspended"
        refused(attempt_login(server, client, device), "certificate_suspended")
        status, answer = ocsp_status(server, device)
        assert status is ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason is x509.ReasonFlags.certificate_hold
    crl = fetch_crl(server)
    assert crl_reason(crl, phone.serial) == crl_reason(crl, spare.serial) == "certificateHold"
    events = audit_events(server, after=mark)
    assert ("jpki.revoked", reason.value) in [(e, d.get("reason")) for e, d in events]
    assert sorted(d["serial"] for e, d in events if e == "certificate.suspended") == sorted(
        [phone.serial, spare.serial, pending_serial])
    assert all(d.get("by") == "jpki-crl" for e, d in events if e == "certificate.suspended")

    # the operator imports J-LIS's renewal record; the person proves with the new card
    new_card = card(server)
    assert run_cli(server, monkeypatch, "jpki", "link", f"{old_card.serial_number:x}",
                   f"{new_card.serial_number:x}").code == 0
    new_phone = server.wallet().enroll(new_card)
    assert new_phone.finish_response["account_status"] == "existing"
    for device in (phone, spare):
        assert device_row(server, device.serial).state == "active"
        assert ocsp_status(server, device)[0] is ocsp.OCSPCertStatus.GOOD
        assert crl_reason(fetch_crl(server), device.serial) is None
    # held before activation: back to pending (never active without its own activation)
    assert device_row(server, pending_serial).state == "pending"
    token = login(server, client, phone)
    assert token.sub == sub and released(client, token) == ATTRIBUTES
    assert login(server, client, new_phone).sub == sub


def test_revocation_of_an_older_card_leaves_current_attributes_alone(server, client, monkeypatch):
    """The card behind the current attributes was already renewed: its revocation changes nothing released."""
    old_card = card(server)
    phone = server.wallet().enroll(old_card)
    new_card = card(server)
    enrol_renewal(server, new_card, cosigner=phone)
    publish(server, "superseded", [(old_card.serial_number, x509.ReasonFlags.superseded)])
    assert run_cli(server, monkeypatch, "jpki", "refresh-crls").code == 0
    with db(server) as session:
        account = session.get(Account, device_row(server, phone.serial).account_id)
        assert account.attributes_current
    assert released(client, login(server, client, phone)) == ATTRIBUTES


def _state(server):
    with db(server) as session:
        bindings = sorted((b.id, b.revoked_at, b.revocation_reason) for b in session.scalars(select(JpkiBinding)))
        accounts = sorted((a.id, a.attributes_current) for a in session.scalars(select(Account)))
    return bindings, accounts, audit_count(server)


@pytest.mark.parametrize("content, message", [
    (b"-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n", "is not a PEM or DER CRL"),
    (b"\x30\x82\x01\x00garbage", "is not a PEM or DER CRL"),
    ("untrusted", "is not signed by a configured JPKI trust anchor"),
])
def test_corrupt_or_untrusted_crl_is_a_clear_error_and_changes_nothing(server, monkeypatch, content, message):
    victim = card(server)
    phone = server.wallet().enroll(victim)
    good = publish(server, "victim", [(victim.serial_number, x509.ReasonFlags.key_compromise)])
    if content == "untrusted":
        bad = publish(server, "zz-untrusted", [], issuer=TestJpkiCA.create(name_suffix=" (forged)"))
    else:
        bad = server.settings.jpki_crls / "zz-corrupt.crl"
        bad.write_bytes(content)
    try:
        before = _state(server)
        result = run_cli(server, monkeypatch, "jpki", "refresh-crls")
        line = result.error_line
        assert "nothing changed" in line and message in line and bad.name in line
        assert _state(server) == before
        # a broken JPKI CRL does not stop the operator from revoking a lost phone
        assert run_cli(server, monkeypatch, "ca", "revoke", phone.serial, "--reason", "keyCompromise").code == 0
    finally:
        bad.unlink()
        good.unlink()


def test_refresh_without_configured_crls(idp, monkeypatch):
    assert "IDP_JPKI_CRLS is not set" in run_cli(idp, monkeypatch, "jpki", "refresh-crls").error_line


def test_replaced_crl_files_are_picked_up_without_restart(server, monkeypatch):
    """A card J-LIS revoked is refused at enrolment once its CRL lands, with no operator command."""
    import idp.proofing.jpki as jpki_module

    card = server.card()
    monkeypatch.setattr(jpki_module, "CRL_RECHECK_SECONDS", 0.0)
    publish(server, "zz-fresh", [(card.serial_number, x509.ReasonFlags.affiliation_changed)])
    try:
        with pytest.raises(WalletError) as refused:
            server.wallet().enroll(card)
        assert refused.value.error == "jpki_revoked"
    finally:
        (server.settings.jpki_crls / "zz-fresh.pem").unlink()
        server.services().jpki.refresh_crls_if_changed(server.settings.jpki_crls)
