"""Enrolment over real HTTP (PROTOCOL.md §3): every check of /enroll/finish and
/enroll/activate refused with a 4xx JSON error, never a 5xx, and nothing half-written.

The wallet (tests/support/wallet.py) is written against the contract only; its ``tamper``
knobs make one thing wrong at a time, so each test shows that one check bites.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idp.proofing.demo_card import TestJpkiCA, cached_key
from idp.storage.models import Account, DeviceCertificate, Enrollment, JpkiBinding
from tests.conftest import RunningIdP, start_idp
from tests.support import core
from tests.support.authenticator import FLAG_AT, FLAG_UP, b64url, b64url_decode, sign_es256
from tests.support.wallet import WalletError, b64std

EVIL_ORIGIN = "https://evil.example"


@pytest.fixture
def wallet(idp: RunningIdP):  # type: ignore[no-untyped-def]
    return idp.wallet()


def refused_finish(idp: RunningIdP, *, error: str | None = None, status: int | None = None,
                   card: Any = None, authenticator: Any = None, **kwargs: Any) -> dict:
    """Begin, then a /enroll/finish that must be refused; return the JSON error body."""
    wallet = idp.wallet()
    start = wallet.begin()
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, card or core.card(idp), authenticator or wallet.new_authenticator(), **kwargs)
    return core.error_of(refused.value, status=status, error=error)


def other_spki() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# the happy path, so every refusal below is a refusal of one thing -------------------------
def test_begin_options_follow_the_contract(wallet) -> None:  # type: ignore[no-untyped-def]
    start = wallet.begin()
    options = start.public_key
    assert start.expires_in == 300
    assert options["rp"]["id"] == wallet.rp_id
    assert len(start.challenge) >= 32
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert wallet.begin().challenge != start.challenge


def test_enrolment_issues_pending_then_active_certificate(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    finished = wallet.finish(start, core.card(idp), authenticator)
    assert finished.status == "pending"
    assert finished.expires_in == 600
    device = x509.load_der_x509_certificate(finished.certificate_der)
    assert device.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == authenticator.public_key_spki_der()
    ca = x509.load_der_x509_certificate(finished.ca_chain[0])
    device.verify_directly_issued_by(ca)
    serial = format(device.serial_number, "x")
    assert core.db_get(idp, DeviceCertificate, serial).state == "pending"
    answer = wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                             credential_id=finished.credential_id)
    assert answer == {"status": "active", "serial": serial}
    assert core.db_get(idp, DeviceCertificate, serial).state == "active"


# the enrolment challenge ---------------------------------------------------------------
def test_expired_enrolment_challenge_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    start = wallet.begin()
    core.db_update(idp, Enrollment, start.enrollment_id, expires_at=core.ago(1))
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, core.card(idp), wallet.new_authenticator())
    core.error_of(refused.value, error="expired")


def test_finish_replay_issues_nothing_new(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    """The same request again is a retry of a lost answer: the same certificate, not a second
    one (tests/test_enrollment_retry.py has the rest)."""
    start = wallet.begin()
    body = wallet.finish_body(start, core.card(idp), wallet.new_authenticator())
    first = wallet.post("/enroll/finish", body)
    assert first.status_code == 201
    before = core.db_count(idp, DeviceCertificate)
    again = wallet.post("/enroll/finish", body)
    assert again.status_code == 201 and again.json()["certificate"] == first.json()["certificate"]
    assert core.db_count(idp, DeviceCertificate) == before


def test_second_credential_on_a_finished_enrolment_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    person = core.card(idp)
    start = wallet.begin()
    wallet.finish(start, person, wallet.new_authenticator())
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, person, wallet.new_authenticator())
    core.error_of(refused.value)


def test_challenge_of_another_enrolment_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    """The credential and card signature answer enrolment A but are sent for enrolment B."""
    other = wallet.begin()
    core.error_of(_refused(idp, wallet, tamper={"enrollment_id": other.enrollment_id}),
                  error="challenge_mismatch")


def test_unknown_enrollment_id_is_404(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    core.error_of(_refused(idp, wallet, tamper={"enrollment_id": "no-such-enrolment"}), status=404)


def _refused(idp: RunningIdP, wallet: Any, **kwargs: Any) -> WalletError:
    start = wallet.begin()
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, core.card(idp), wallet.new_authenticator(), **kwargs)
    return refused.value


# the WebAuthn registration --------------------------------------------------------------
@pytest.mark.parametrize(("create", "error"), [
    ({"origin": EVIL_ORIGIN}, "origin_mismatch"),
    ({"rp_id_hash_override": hashlib.sha256(b"evil.example").digest()}, "rp_id_mismatch"),
    ({"flags_override": FLAG_UP | FLAG_AT}, "user_not_verified"),
    ({"challenge_override": os.urandom(32)}, "challenge_mismatch"),
    ({"type_override": "webauthn.get"}, "type_mismatch"),
], ids=["wrong-origin", "wrong-rp-id-hash", "uv-missing", "wrong-challenge", "wrong-type"])
def test_bad_registration_is_refused(idp: RunningIdP, create: dict, error: str) -> None:
    refused_finish(idp, tamper={"create": create}, error=error, status=400)


def test_authenticator_without_user_verification_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    refused_finish(idp, authenticator=wallet.new_authenticator(user_verifying=False), error="user_not_verified")


def test_synced_passkey_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    assert idp.settings.allow_synced_keys is False
    refused_finish(idp, authenticator=wallet.new_authenticator(backup_eligible=True), error="synced_key_refused")


def test_forged_attestation_statement_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    """A packed self-attestation is verified even without roots: a forged one is refused."""
    start = wallet.begin()
    body = wallet.finish_body(start, core.card(idp), wallet.new_authenticator(attestation="packed-self"))
    response = body["credential"]["response"]
    attestation = cbor2.loads(b64url_decode(response["attestationObject"]))
    forged = ec.generate_private_key(ec.SECP256R1())
    attestation["attStmt"]["sig"] = sign_es256(forged, b"something else")
    response["attestationObject"] = b64url(cbor2.dumps(attestation))
    core.error_of(wallet.post("/enroll/finish", body), status=400)


def test_genuine_self_attestation_enrols_unattested(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    device = wallet.enroll(core.card(idp), authenticator=wallet.new_authenticator(attestation="packed-self"))
    assert core.db_get(idp, DeviceCertificate, device.serial).hardware_attested is False


# the JPKI certificate -------------------------------------------------------------------
def test_card_from_a_rogue_ca_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    rogue = TestJpkiCA.create(key=cached_key("rogue-jpki-ca"))
    rogue_card = rogue.issue_card(key=cached_key("core-path-card"))
    refused_finish(idp, card=rogue_card, error="jpki_untrusted_issuer")
    # Sending the rogue CA along as a "chain" does not make it trusted either.
    refused_finish(idp, card=rogue_card, jpki_chain=[rogue.certificate], error="jpki_untrusted_issuer")


def test_card_under_a_rogue_intermediate_is_refused(idp: RunningIdP) -> None:
    """An intermediate named like J-LIS but issued by a rogue root does not chain to the anchor."""
    rogue_root = TestJpkiCA.create(key=cached_key("rogue-jpki-ca"))
    intermediate = TestJpkiCA.create(key=cached_key("rogue-intermediate"), parent=rogue_root)
    rogue_card = intermediate.issue_card(key=cached_key("core-path-card"))
    refused_finish(idp, card=rogue_card, jpki_chain=[intermediate.certificate], error="jpki_untrusted_issuer")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_expired_card_is_refused(idp: RunningIdP) -> None:
    expired = core.card(idp, not_before=_now() - datetime.timedelta(days=20),
                        not_after=_now() - datetime.timedelta(minutes=1))
    refused_finish(idp, card=expired, error="jpki_expired")


def test_not_yet_valid_card_is_refused(idp: RunningIdP) -> None:
    future = core.card(idp, not_before=_now() + datetime.timedelta(days=1))
    refused_finish(idp, card=future, error="jpki_not_yet_valid")


@pytest.mark.parametrize(("overrides", "error"), [
    ({"key_usage": ("digital_signature",)}, "jpki_bad_key_usage"),
    ({"key_usage": ("digital_signature", "content_commitment", "key_cert_sign")}, "jpki_bad_key_usage"),
    pytest.param({"key_usage": ("digital_signature", "content_commitment", "key_encipherment")},
                 "jpki_bad_key_usage", id="ku-extra-key-encipherment"),
    ({"key_usage_critical": False}, "jpki_bad_key_usage"),
    ({"key_usage": None}, "jpki_bad_key_usage"),
    ({"policy_oid": "1.2.392.200149.8.5.1.1.10"}, "jpki_bad_policy"),
    ({"policy_oid": None}, "jpki_bad_policy"),
], ids=["ku-no-nonrepudiation", "ku-extra-cert-sign", "ku-extra-key-encipherment", "ku-not-critical", "ku-missing", "wrong-policy", "no-policy"])
def test_card_with_wrong_profile_is_refused(idp: RunningIdP, overrides: dict, error: str) -> None:
    refused_finish(idp, card=core.card(idp, **overrides), error=error)


@pytest.mark.parametrize("attribute", [
    "name", "name_substitution", "gender", "date_of_birth", "address", "address_substitution",
])
def test_card_missing_a_san_attribute_is_refused(idp: RunningIdP, attribute: str) -> None:
    body = refused_finish(idp, card=core.card(idp, omit_attributes=[attribute]), error="jpki_missing_attribute")
    assert attribute in body["error_description"]


def test_card_with_duplicated_attribute_is_refused(idp: RunningIdP) -> None:
    refused_finish(idp, card=core.card(idp, extra_attributes=[("name", "別人　花子")]), error="jpki_bad_attribute")


# the card's binding signature -------------------------------------------------------------
def test_binding_over_another_challenge_is_refused(idp: RunningIdP) -> None:
    refused_finish(idp, tamper={"binding_challenge": os.urandom(32)}, error="jpki_bad_signature")


def test_binding_over_another_key_is_refused(idp: RunningIdP) -> None:
    refused_finish(idp, tamper={"binding_spki": other_spki()}, error="jpki_bad_signature")


def test_binding_signed_by_another_card_is_refused(idp: RunningIdP) -> None:
    thief = core.card(idp, key=cached_key("another-card"))
    refused_finish(idp, tamper={"signer": thief}, error="jpki_bad_signature")


def test_certificate_of_another_card_with_own_signature_is_refused(idp: RunningIdP) -> None:
    """A stolen certificate (someone else's identity) signed with the attacker's card key."""
    victim = core.card(idp, key=cached_key("victim-card"))
    attacker = core.card(idp)
    refused_finish(idp, card=victim, tamper={"signer": attacker}, error="jpki_bad_signature")


# revocation: a server that reads a JPKI CRL ---------------------------------------------
@pytest.fixture(scope="module")
def crl_idp(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[tuple[RunningIdP, Any]]:
    """A separate IdP started with ``IDP_JPKI_CRLS`` naming a CRL that revokes one card."""
    tmp = tmp_path_factory.mktemp("crl-idp")
    revoked = jpki_ca.issue_card(key=cached_key("revoked-card"))
    crl = jpki_ca.crl([(revoked.serial_number, x509.ReasonFlags.key_compromise)])
    path = tmp / "jpki-crls"
    path.mkdir()
    (path / "jpki.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    with contextlib.contextmanager(start_idp)(tmp / "server", jpki_ca, env={"IDP_JPKI_CRLS": str(path)}) as running:
        yield running, revoked


def test_revoked_card_is_refused(crl_idp: tuple[RunningIdP, Any]) -> None:
    server, revoked = crl_idp
    refused_finish(server, card=revoked, error="jpki_revoked")
    # The same server enrols a card that is not on the CRL: the refusal was the revocation.
    assert core.enrol(server).serial


# malformed input: always a 4xx JSON error, never a 5xx ------------------------------------
def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(body: dict) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value
    return mutate


_DELETE = object()


def _cbor_truncated(value: str) -> str:
    raw = b64url_decode(value)
    return b64url(raw[: len(raw) // 2])


def _b64url_of(data: bytes) -> Callable[[Any], str]:
    return lambda _old: b64url(data)


MALFORMED_FINISH: dict[str, Callable[[dict], None]] = {
    "enrollment_id-int": _set("enrollment_id", 12345),
    "enrollment_id-null": _set("enrollment_id", None),
    "enrollment_id-missing": _set("enrollment_id", _DELETE),
    "enrollment_id-oversize": _set("enrollment_id", "x" * 5000),
    "credential-string": _set("credential", "not an object"),
    "credential-missing": _set("credential", _DELETE),
    "jpki-list": _set("jpki", ["certificate"]),
    "jpki-missing": _set("jpki", _DELETE),
    "credential-type": _set("credential.type", "password"),
    "rawId-int": _set("credential.rawId", 7),
    "rawId-not-base64url": _set("credential.rawId", "***"),
    "id-differs": _set("credential.id", b64url(os.urandom(32))),
    "response-missing": _set("credential.response", _DELETE),
    "response-list": _set("credential.response", []),
    "clientDataJSON-not-base64url": _set("credential.response.clientDataJSON", "%%%"),
    "clientDataJSON-padded": _set("credential.response.clientDataJSON", lambda v: v + "=="),
    "clientDataJSON-not-json": _set("credential.response.clientDataJSON", _b64url_of(b"not json {")),
    "clientDataJSON-array": _set("credential.response.clientDataJSON", _b64url_of(b"[1, 2]")),
    "clientDataJSON-not-utf8": _set("credential.response.clientDataJSON", _b64url_of(b"\xff\xfe{}")),
    "clientDataJSON-challenge-int": _set(
        "credential.response.clientDataJSON",
        _b64url_of(b'{"type":"webauthn.create","challenge":5,"origin":"http://x"}')),
    "attestationObject-truncated-cbor": _set("credential.response.attestationObject", _cbor_truncated),
    "attestationObject-not-cbor": _set("credential.response.attestationObject", _b64url_of(b"\xff\x00\x01")),
    "attestationObject-wrong-types": _set(
        "credential.response.attestationObject",
        _b64url_of(cbor2.dumps({"fmt": 1, "attStmt": [], "authData": "text"}))),
    "attestationObject-empty-authData": _set(
        "credential.response.attestationObject",
        _b64url_of(cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": b""}))),
    "attestationObject-missing": _set("credential.response.attestationObject", _DELETE),
    "attestationObject-oversize": _set("credential.response.attestationObject", _b64url_of(os.urandom(150_000))),
    "certificate-not-base64": _set("jpki.certificate", "***not base64***"),
    "certificate-int": _set("jpki.certificate", 42),
    "certificate-garbage-der": _set("jpki.certificate", b64std(b"garbage, not DER")),
    "certificate-truncated-der": _set("jpki.certificate", lambda v: b64std(base64.b64decode(v)[:300])),
    "certificate-oversize": _set("jpki.certificate", b64std(os.urandom(100_000))),
    "certificate-empty": _set("jpki.certificate", ""),
    "chain-string": _set("jpki.chain", "abc"),
    "chain-too-long": _set("jpki.chain", [b64std(b"x")] * 50),
    "chain-garbage": _set("jpki.chain", [b64std(b"not a certificate")]),
    "chain-item-int": _set("jpki.chain", [1]),
    "signature-not-base64": _set("jpki.signature", "!!"),
    "signature-dict": _set("jpki.signature", {"a": 1}),
    "signature-oversize": _set("jpki.signature", b64std(os.urandom(4096))),
    "signature-short": _set("jpki.signature", b64std(b"\x01\x02")),
    "signature-missing": _set("jpki.signature", _DELETE),
    "renewal-string": _set("renewal", "yes"),
    "renewal-garbage-credential": _set("renewal", {"credential": {"id": "AA", "rawId": "AA"}}),
}


@pytest.mark.parametrize("mutation", list(MALFORMED_FINISH), ids=list(MALFORMED_FINISH))
def test_malformed_finish_is_a_4xx_json_error(idp: RunningIdP, wallet, mutation: str) -> None:  # type: ignore[no-untyped-def]
    start = wallet.begin()
    body = wallet.finish_body(start, core.card(idp), wallet.new_authenticator())
    MALFORMED_FINISH[mutation](body)
    core.error_of(wallet.post("/enroll/finish", body))


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[1,2,3]", b'"string"', b"null", b"{",
    '{"enrollment_id": "\udc80"}'.encode("utf-8", "surrogatepass"),
    b'{"enrollment_id": "\\udc80"}',
], ids=["empty", "not-json", "array", "string", "null", "truncated", "not-utf8", "lone-surrogate-escape"])
@pytest.mark.parametrize("path", ["/enroll/finish", "/enroll/activate"])
def test_non_object_bodies_are_4xx(idp: RunningIdP, wallet, path: str, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    response = wallet.session.post(idp.base_url + path, data=raw, timeout=10,
                                   headers={"Content-Type": "application/json", "Accept": "application/json"})
    core.error_of(response)


def test_oversize_body_is_a_4xx_json_error(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    start = wallet.begin()
    body = wallet.finish_body(start, core.card(idp), wallet.new_authenticator())
    body["padding"] = "A" * (1024 * 1024)
    core.error_of(wallet.post("/enroll/finish", body), status=413)


# activation --------------------------------------------------------------------------
def _finished(idp: RunningIdP, wallet: Any) -> tuple[Any, Any]:
    authenticator = wallet.new_authenticator()
    finished = wallet.finish(wallet.begin(), core.card(idp), authenticator)
    return finished, authenticator


def _serial(finished: Any) -> str:
    return format(x509.load_der_x509_certificate(finished.certificate_der).serial_number, "x")


def test_activation_by_another_enrolled_key_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    other = core.enrol(idp)
    finished, _ = _finished(idp, wallet)
    with pytest.raises(WalletError) as refused:
        wallet.activate(finished.enrollment_id, finished.activation_options, other.authenticator,
                        credential_id=other.credential_id)
    core.error_of(refused.value, error="wrong_key")
    assert core.db_get(idp, DeviceCertificate, _serial(finished)).state == "pending"


def test_activation_signed_by_another_key_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    """The right credential ID, but the signature is not by the certified key."""
    finished, authenticator = _finished(idp, wallet)
    with pytest.raises(WalletError) as refused:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        credential_id=finished.credential_id, sign_with=ec.generate_private_key(ec.SECP256R1()))
    core.error_of(refused.value, error="bad_signature")
    assert core.db_get(idp, DeviceCertificate, _serial(finished)).state == "pending"


@pytest.mark.parametrize(("overrides", "error"), [
    ({"challenge_override": os.urandom(32)}, "challenge_mismatch"),
    ({"origin": EVIL_ORIGIN}, "origin_mismatch"),
    ({"uv": False}, "user_not_verified"),
    ({"type_override": "webauthn.create"}, "type_mismatch"),
], ids=["wrong-challenge", "wrong-origin", "uv-missing", "wrong-type"])
def test_bad_activation_assertion_is_refused(idp: RunningIdP, wallet, overrides: dict, error: str) -> None:  # type: ignore[no-untyped-def]
    finished, authenticator = _finished(idp, wallet)
    with pytest.raises(WalletError) as refused:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        credential_id=finished.credential_id, **overrides)
    core.error_of(refused.value, error=error)
    assert core.db_get(idp, DeviceCertificate, _serial(finished)).state == "pending"


def test_activation_after_the_window_is_refused_for_good(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    finished, authenticator = _finished(idp, wallet)
    core.db_update(idp, Enrollment, finished.enrollment_id, activation_expires_at=core.ago(1))
    with pytest.raises(WalletError) as refused:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        credential_id=finished.credential_id)
    core.error_of(refused.value, error="expired")
    assert core.db_get(idp, DeviceCertificate, _serial(finished)).state == "pending"


def test_activation_replay_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    finished, authenticator = _finished(idp, wallet)
    credential = authenticator.get(finished.activation_options, credential_id=finished.credential_id)
    body = {"enrollment_id": finished.enrollment_id, "credential": credential}
    assert wallet.post("/enroll/activate", body).status_code == 200
    core.error_of(wallet.post("/enroll/activate", body))
    # A fresh signature over the same (used) activation challenge is refused as well.
    with pytest.raises(WalletError) as refused:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        credential_id=finished.credential_id)
    core.error_of(refused.value)


def test_activation_before_finish_is_refused(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    device = core.enrol(idp)
    start = wallet.begin()
    credential = device.authenticator.get({"challenge": b64url(start.challenge)}, credential_id=device.credential_id)
    core.error_of(wallet.post("/enroll/activate", {"enrollment_id": start.enrollment_id, "credential": credential}))


MALFORMED_ACTIVATE: dict[str, Callable[[dict], None]] = {
    "unknown-enrollment": _set("enrollment_id", "no-such-enrolment"),
    "enrollment_id-list": _set("enrollment_id", ["a"]),
    "credential-missing": _set("credential", _DELETE),
    "credential-string": _set("credential", "x"),
    "rawId-not-base64url": _set("credential.rawId", "+/+/"),
    "unknown-credential": lambda body: body["credential"].update(id=b64url(b"\x01" * 32), rawId=b64url(b"\x01" * 32)),
    "authenticatorData-truncated": _set("credential.response.authenticatorData",
                                        lambda v: b64url(b64url_decode(v)[:20])),
    "signature-garbage": _set("credential.response.signature", _b64url_of(b"\x30\x02garbage")),
    "signature-int": _set("credential.response.signature", 3),
    "userHandle-other": _set("credential.response.userHandle", _b64url_of(os.urandom(32))),
    "userHandle-not-base64url": _set("credential.response.userHandle", "==="),
    "clientDataJSON-not-json": _set("credential.response.clientDataJSON", _b64url_of(b"{{")),
}


@pytest.mark.parametrize("mutation", list(MALFORMED_ACTIVATE), ids=list(MALFORMED_ACTIVATE))
def test_malformed_activation_is_a_4xx_json_error(idp: RunningIdP, wallet, mutation: str) -> None:  # type: ignore[no-untyped-def]
    finished, authenticator = _finished(idp, wallet)
    credential = authenticator.get(finished.activation_options, credential_id=finished.credential_id)
    body = {"enrollment_id": finished.enrollment_id, "credential": copy.deepcopy(credential)}
    MALFORMED_ACTIVATE[mutation](body)
    core.error_of(wallet.post("/enroll/activate", body))
    assert core.db_get(idp, DeviceCertificate, _serial(finished)).state == "pending"
    # The refusal did not burn the ceremony: the genuine assertion still activates.
    assert wallet.post("/enroll/activate", {"enrollment_id": finished.enrollment_id,
                                            "credential": credential}).status_code == 200


def test_pending_certificate_cannot_log_in(idp: RunningIdP, browser) -> None:  # type: ignore[no-untyped-def]
    pending = core.enrol(idp, activate=False)
    assert pending.serial is None
    rp = core.register(idp)
    txn = core.start_login(rp, browser)
    wallet = idp.wallet(browser)
    with pytest.raises(WalletError) as refused:
        wallet.login(txn, authenticator=pending)
    core.error_of(refused.value, error="certificate_pending")


# nothing half-written ---------------------------------------------------------------------
def _row_counts(idp: RunningIdP) -> dict[str, int]:
    return {model.__tablename__: core.db_count(idp, model) for model in (Account, DeviceCertificate, JpkiBinding)}


@pytest.mark.parametrize("tamper", [
    {"binding_spki": b"x" * 91},
    {"create": {"origin": EVIL_ORIGIN}},
    {"body": {"renewal": {"credential": "nope"}}},
], ids=["bad-binding", "bad-registration", "bad-renewal"])
def test_refused_finish_writes_nothing(idp: RunningIdP, wallet, tamper: dict) -> None:  # type: ignore[no-untyped-def]
    person = core.card(idp)
    before = _row_counts(idp)
    start = wallet.begin()
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, person, wallet.new_authenticator(), tamper=tamper)
    core.error_of(refused.value)
    assert _row_counts(idp) == before
    assert core.db_get(idp, Enrollment, start.enrollment_id).state == "begun"
    # The enrolment can still be finished properly: the refusal was not a half-done success.
    assert wallet.finish(start, person, wallet.new_authenticator()).status == "pending"
    after = _row_counts(idp)
    assert after == {k: v + 1 for k, v in before.items()}


def test_refused_renewal_cosignature_keeps_the_existing_account_unchanged(idp: RunningIdP, wallet) -> None:  # type: ignore[no-untyped-def]
    """A renewal co-signed with a bad signature changes no account attributes and adds nothing."""
    device = core.enrol(idp)
    account_id = core.db_get(idp, DeviceCertificate, device.serial).account_id
    before_account = core.db_get(idp, Account, account_id)
    before = _row_counts(idp)
    renewed = core.card(idp, address="東京都千代田区永田町一丁目７番１号", key=cached_key("renewed-card"))
    start = wallet.begin()
    cosign = device.authenticator.get({"challenge": b64url(start.challenge)}, credential_id=device.credential_id,
                                      sign_with=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(WalletError) as refused:
        wallet.finish(start, renewed, wallet.new_authenticator(), tamper={"body": {"renewal": {"credential": cosign}}})
    core.error_of(refused.value)
    assert _row_counts(idp) == before
    assert core.db_get(idp, Account, account_id).address == before_account.address
