"""Phone change and card renewal (issue 4 item 3), end to end over HTTP.

Same card again → same account, same pairwise ``sub``. A renewed card (new serial) joins
the account by a co-signature of an active device key, or by the operator's linkage
import (``idp jpki link OLD NEW`` / ``--file``). Without either the person gets a new
account and is told why; accounts are never merged silently.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp.storage.models import Account, Enrollment, JpkiBinding, JpkiLink
from tests.support.lifecycle import (
    audit_count,
    card,
    cosign,
    db,
    device_row,
    enrol_renewal,
    login,
    rp,
    run_cli,
)
from tests.support.wallet import WalletError

NEW_ADDRESS = "群馬県高崎市高松町三十五番地一"


@pytest.fixture(scope="module")
def client(idp):
    return rp(idp)


@pytest.fixture(scope="module")
def other_sector(idp):
    from tests.support.rp import RelyingParty

    return RelyingParty.register(idp.base_url, redirect_uri="http://localhost:9/cb", rp_category="medical",
                                 scope="openid profile")


def test_new_phone_with_the_same_card_is_the_same_account(idp, client, other_sector):
    person = card(idp)
    old_phone = idp.wallet().enroll(person)
    assert old_phone.finish_response["account_status"] == "new"
    subs = login(idp, client, old_phone).sub, login(idp, other_sector, old_phone).sub
    new_phone = idp.wallet().enroll(person)
    assert new_phone.finish_response["account_status"] == "existing"
    assert "already proved your account" in new_phone.finish_response["explanation"]
    assert device_row(idp, new_phone.serial).account_id == device_row(idp, old_phone.serial).account_id
    assert (login(idp, client, new_phone).sub, login(idp, other_sector, new_phone).sub) == subs
    assert subs[0] != subs[1]  # pairwise across sectors, also after the phone change


def test_renewed_card_joins_by_device_co_signature(idp, client):
    old_card = card(idp)
    phone = idp.wallet().enroll(old_card)
    sub = login(idp, client, phone).sub
    renewed = card(idp, address=NEW_ADDRESS)  # a new serial for the same person (moved)
    assert renewed.serial_number != old_card.serial_number
    new_phone = enrol_renewal(idp, renewed, cosigner=phone)
    assert new_phone.finish_response["account_status"] == "existing"
    assert "active devices also signed" in new_phone.finish_response["explanation"]
    token = login(idp, client, new_phone)
    assert token.sub == sub
    assert client.userinfo(token.access_token)["address"]["formatted"] == NEW_ADDRESS  # attributes updated
    assert login(idp, client, phone).sub == sub  # the old phone is still the same person


def test_renewed_card_without_proof_of_the_link_is_a_new_account(idp, client):
    phone = idp.wallet().enroll(card(idp))
    sub = login(idp, client, phone).sub
    accounts = _count(idp, Account)
    stranger = idp.wallet().enroll(card(idp))  # the person's renewed card, but nothing links it
    answer = stranger.finish_response
    assert answer["account_status"] == "new"
    assert "new account" in answer["explanation"] and "never merged" in answer["explanation"]
    assert "signing with a device" in answer["explanation"] and "renewal record" in answer["explanation"]
    assert _count(idp, Account) == accounts + 1
    assert login(idp, client, stranger).sub != sub


def test_co_signature_by_a_device_of_another_account_is_refused(idp):
    mine, theirs = card(idp), card(idp)
    idp.wallet().enroll(mine)
    their_phone = idp.wallet().enroll(theirs)
    before = audit_count(idp), _count(idp, JpkiBinding)
    with pytest.raises(WalletError) as refused:
        enrol_renewal(idp, mine, cosigner=their_phone)  # my card is bound to my account
    assert refused.value.status == 400 and refused.value.error == "account_conflict"
    assert _count(idp, JpkiBinding) == before[1]


def test_bad_co_signature_is_refused_not_turned_into_a_new_account(idp):
    phone = idp.wallet().enroll(card(idp))
    renewed = card(idp)
    wallet = idp.wallet()
    start = wallet.begin()
    forged = cosign(phone, start.public_key["challenge"])
    forged["response"]["signature"] = cosign(phone, "AAAA")["response"]["signature"]  # over another challenge
    accounts = _count(idp, Account)
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, renewed, wallet.new_authenticator(), tamper={"body": {"renewal": {"credential": forged}}})
    assert refused.value.status == 400 and refused.value.error == "bad_signature"
    assert _count(idp, Account) == accounts
    for bad in ({"credential": "x"}, ["x"], "x"):
        start = wallet.begin()
        with pytest.raises(WalletError) as refused:
            wallet.finish(start, renewed, wallet.new_authenticator(), tamper={"body": {"renewal": bad}})
        assert refused.value.status == 400 and refused.value.error == "invalid_request"
    assert _count(idp, Account) == accounts


def test_a_refused_co_signature_leaves_the_enrolment_open_for_a_good_one(idp):
    """The refusal is kept (the device's failure count), but the enrolment is not spent: it
    is never "finished" without a certificate, and the right co-signature then succeeds."""
    phone = idp.wallet().enroll(card(idp))
    renewed = card(idp)
    wallet = idp.wallet()
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    forged = cosign(phone, start.public_key["challenge"])
    forged["response"]["signature"] = cosign(phone, "AAAA")["response"]["signature"]
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, renewed, authenticator, tamper={"body": {"renewal": {"credential": forged}}})
    assert refused.value.error == "bad_signature"
    with idp.services().db.transaction() as session:
        enrollment = session.get(Enrollment, start.enrollment_id)
        assert enrollment.state == "begun" and enrollment.device_serial is None
    good = {"body": {"renewal": {"credential": cosign(phone, start.public_key["challenge"])}}}
    finished = wallet.finish(start, renewed, authenticator, tamper=good)
    assert finished.raw["account_status"] == "existing"


def test_suspended_device_cannot_co_sign(idp, monkeypatch):
    phone = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", phone.serial, "--reason", "certificateHold").code == 0
    with pytest.raises(WalletError) as refused:
        enrol_renewal(idp, card(idp), cosigner=phone)
    assert refused.value.error == "certificate_suspended"


def test_renewed_card_joins_by_operator_linkage(idp, client, monkeypatch):
    old_card = card(idp)
    phone = idp.wallet().enroll(old_card)
    sub = login(idp, client, phone).sub
    renewed = card(idp, name="前橋　花子")
    result = run_cli(idp, monkeypatch, "jpki", "link", format(old_card.serial_number, "x"),
                     format(renewed.serial_number, "X"))
    assert result.code == 0 and "linked 1 renewal" in result.out, result
    new_phone = idp.wallet().enroll(renewed)
    assert new_phone.finish_response["account_status"] == "existing"
    assert "renewal record" in new_phone.finish_response["explanation"]
    token = login(idp, client, new_phone)
    assert token.sub == sub
    assert client.userinfo(token.access_token)["name"] == "前橋　花子"
    # linking again is idempotent
    assert run_cli(idp, monkeypatch, "jpki", "link", format(old_card.serial_number, "x"),
                   format(renewed.serial_number, "x")).out.startswith("linked 0")


def test_bulk_linkage_file_and_chained_renewals(idp, client, monkeypatch, tmp_path):
    first, second = card(idp), card(idp)
    phones = [idp.wallet().enroll(first), idp.wallet().enroll(second)]
    subs = [login(idp, client, p).sub for p in phones]
    second_renewal, third_renewal, first_renewal = card(idp), card(idp), card(idp)
    csv = tmp_path / "links.csv"
    csv.write_text("old,new\n"
                   f"{first.serial_number:x},{first_renewal.serial_number:x}\n"
                   "# renewed twice before the person came back: the links chain\n"
                   f"{second.serial_number:x},{second_renewal.serial_number:x}\n"
                   f"{second_renewal.serial_number:x},{third_renewal.serial_number:x}\n", encoding="utf-8")
    result = run_cli(idp, monkeypatch, "jpki", "link", "--file", str(csv))
    assert result.code == 0 and "linked 3 renewal" in result.out, result
    assert login(idp, client, idp.wallet().enroll(first_renewal)).sub == subs[0]
    assert login(idp, client, idp.wallet().enroll(third_renewal)).sub == subs[1]


def _count(idp, model, *where):
    with db(idp) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize("case", ["unknown_old", "same", "new_has_account", "new_linked_elsewhere", "bad_row",
                                  "bad_hex", "three_columns", "empty", "missing_file", "binary_file", "both"])
def test_linkage_errors_are_one_line_and_import_nothing(idp, monkeypatch, tmp_path, case):
    known, other, with_account = card(idp), card(idp), card(idp)
    idp.wallet().enroll(known)
    idp.wallet().enroll(other)
    idp.wallet().enroll(with_account)
    fresh, fresh2 = card(idp).serial_number, card(idp).serial_number
    assert run_cli(idp, monkeypatch, "jpki", "link", f"{other.serial_number:x}", f"{fresh2:x}").code == 0
    k, o, w = (f"{c.serial_number:x}" for c in (known, other, with_account))
    csv = tmp_path / "links.csv"
    rows, message = {
        "unknown_old": (f"{k},{fresh:x}\n{fresh2 + 1:x},{fresh + 1:x}\n", "no account was proven with JPKI serial"),
        "same": (f"{k},{k}\n", "OLD and NEW are the same serial"),
        "new_has_account": (f"{k},{fresh:x}\n{k},{w}\n", "already proved an account of its own"),
        "new_linked_elsewhere": (f"{k},{fresh2:x}\n", "already linked to another card"),
        "bad_row": (f"{k},{fresh:x}\n{k};{fresh:x}\n", "links.csv:2: expected two columns"),
        "bad_hex": (f"{k},{fresh:x}\n{k},xyz\n", "links.csv:2: 'xyz' is not a hexadecimal serial number"),
        "three_columns": (f"{k},{fresh:x},1\n", "links.csv:1: expected two columns"),
        "empty": ("old,new\n", "no old,new pairs found"),
        "missing_file": (None, "No such file or directory"),
        "binary_file": (b"\xff\xfe\x00bad", "not a UTF-8 CSV file"),
        "both": (f"{k},{fresh:x}\n", "not both"),
    }[case]
    if isinstance(rows, bytes):
        csv.write_bytes(rows)
    elif rows is not None:
        csv.write_text(rows, encoding="utf-8")
    links, entries = _count(idp, JpkiLink), audit_count(idp)
    argv = ["jpki", "link", "--file", str(csv)] + ([k, f"{fresh:x}"] if case == "both" else [])
    result = run_cli(idp, monkeypatch, *argv)
    assert message in result.error_line
    assert (_count(idp, JpkiLink), audit_count(idp)) == (links, entries)


def test_link_command_usage_errors(idp, monkeypatch):
    assert "give OLD NEW or --file F" in run_cli(idp, monkeypatch, "jpki", "link").error_line
    assert "is not a valid certificate serial number" in run_cli(idp, monkeypatch, "jpki", "link", "0",
                                                                 "1").error_line
