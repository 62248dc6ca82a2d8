"""JPKI signing certificate verification (idp.proofing.jpki) against the test JPKI CA."""

from __future__ import annotations

import datetime
import logging
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp.proofing import jpki
from idp.proofing.demo_card import TestJpkiCA, cached_key

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
CHALLENGE = b"\x01" * 32
SPKI = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)


def trusting(*args, **kwargs) -> jpki.JpkiTrustStore:
    """A store that, like a development deployment, accepts the test cards made here."""
    return jpki.JpkiTrustStore(*args, accept_test_cards=True, **kwargs)


@pytest.fixture(scope="module")
def ca() -> TestJpkiCA:
    return TestJpkiCA.create(key=cached_key("ca"))


@pytest.fixture(scope="module")
def store(ca: TestJpkiCA) -> jpki.JpkiTrustStore:
    return trusting([ca.certificate])


def issue(ca: TestJpkiCA, **overrides):
    return ca.issue_card(key=overrides.pop("key", cached_key("card")), **overrides)


def refused(store: jpki.JpkiTrustStore, der: bytes, code: str, **kwargs) -> jpki.JpkiError:
    with pytest.raises(jpki.JpkiError) as caught:
        store.verify(der, **kwargs)
    assert caught.value.code == code, caught.value.description
    return caught.value


def pem(*items) -> bytes:
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items)


# --- a good card -------------------------------------------------------------


def test_good_card_yields_attributes(ca, store):
    card = issue(ca)
    verified = store.verify(card.certificate_der)
    attributes = verified.attributes
    assert attributes.name == "前橋　太郎"
    assert attributes.name_substitution == "00000"
    assert attributes.address == "群馬県前橋市大手町二丁目１２番１号"
    assert (attributes.gender, attributes.gender_claim) == ("1", "male")
    assert (attributes.date_of_birth, attributes.birthdate) == ("419800101", datetime.date(1980, 1, 1))
    assert verified.policy_oid == jpki.TEST_POLICY_OID
    assert verified.serial_number == card.serial_number
    assert verified.issuer_der == ca.certificate.subject.public_bytes()
    assert verified.not_after == card.certificate.not_valid_after_utc
    assert verified.not_before.tzinfo is not None


def test_production_policy_is_accepted_and_exposed(ca, store):
    card = issue(ca, policy_oid=jpki.PRODUCTION_POLICY_OID)
    assert store.verify(card.certificate_der).policy_oid == jpki.PRODUCTION_POLICY_OID


def test_repr_reveals_no_personal_data_or_serial(ca, store):
    card = issue(ca)
    verified = store.verify(card.certificate_der)
    text = repr(verified) + repr(verified.attributes)
    assert "前橋" not in text and str(card.serial_number) not in text


def test_chain_through_intermediate(ca):
    sub = TestJpkiCA.create(key=cached_key("sub"), parent=ca, name_suffix=" 2")
    card = issue(sub)
    store = trusting([ca.certificate])
    assert store.verify(card.certificate_der, [sub.certificate.public_bytes(serialization.Encoding.DER)])
    refused(store, card.certificate_der, "untrusted_issuer")
    assert trusting([sub.certificate]).verify(card.certificate_der)


def test_intermediate_without_key_cert_sign_is_refused(ca):
    key = cached_key("sub")
    name = x509.Name.from_rfc4514_string("OU=No CertSign,O=JPKI,C=JP")
    bad_sub = TestJpkiCA(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, True, False, False), critical=True
        )
        .sign(ca.private_key, hashes.SHA256()),
        key,
    )
    card = issue(bad_sub)
    chain = [bad_sub.certificate.public_bytes(serialization.Encoding.DER)]
    refused(trusting([ca.certificate]), card.certificate_der, "untrusted_issuer", chain_der=chain)


# --- trust, validity, revocation ---------------------------------------------


def test_rogue_ca_with_the_same_name_is_refused(ca, store):
    rogue = TestJpkiCA.create(key=cached_key("rogue"))
    assert rogue.certificate.subject == ca.certificate.subject
    refused(store, issue(rogue).certificate_der, "untrusted_issuer")


def test_empty_trust_store_fails_closed(ca, tmp_path):
    der = issue(ca).certificate_der
    for store in (
        trusting(),
        jpki.JpkiTrustStore.from_paths(None, None, accept_test_cards=True),
        jpki.JpkiTrustStore.from_paths(tmp_path / "absent", None, accept_test_cards=True),
        jpki.JpkiTrustStore.from_paths(tmp_path, None, accept_test_cards=True),
    ):
        refused(store, der, "untrusted_issuer")


def test_expired(ca, store):
    card = issue(ca, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    refused(store, card.certificate_der, "expired")
    refused(store, issue(ca).certificate_der, "expired", at=NOW + 6 * 365 * DAY)


def test_not_yet_valid(ca, store):
    card = issue(ca, not_before=NOW + DAY, not_after=NOW + 10 * DAY)
    refused(store, card.certificate_der, "not_yet_valid")
    assert store.verify(card.certificate_der, at=NOW + 2 * DAY)


def test_naive_time_is_a_programming_error(ca, store):
    with pytest.raises(ValueError):
        store.verify(issue(ca).certificate_der, at=datetime.datetime.now())


def test_revoked_via_crl(ca):
    card, other = issue(ca), issue(ca)
    crl = ca.crl([(card.serial_number, x509.ReasonFlags.key_compromise)])
    store = trusting([ca.certificate], [("test CRL", crl)])
    error = refused(store, card.certificate_der, "revoked")
    assert str(card.serial_number) not in str(error)
    assert store.verify(other.certificate_der)
    issuer = ca.certificate.subject.public_bytes()
    assert store.revoked_serials() == [(issuer, card.serial_number, "keyCompromise")]


def test_crl_signed_by_another_key_is_rejected_at_load(ca, tmp_path):
    rogue = TestJpkiCA.create(key=cached_key("rogue"))
    crl = rogue.crl([(1, None)])
    with pytest.raises(jpki.JpkiError) as caught:
        trusting([ca.certificate], [("rogue CRL", crl)])
    assert caught.value.code == "untrusted_crl"
    (tmp_path / "ca.pem").write_bytes(pem(ca.certificate))
    (tmp_path / "rogue.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    with pytest.raises(jpki.JpkiError, match="rogue.crl"):
        jpki.JpkiTrustStore.from_paths(tmp_path / "ca.pem", tmp_path / "rogue.crl", accept_test_cards=True)


def test_stale_crl_still_revokes_and_is_noted(ca, caplog):
    card = issue(ca)
    crl = ca.crl([(card.serial_number, None)], now=NOW - 10 * DAY, next_update=NOW - DAY)
    store = trusting([ca.certificate], [("stale", crl)])
    refused(store, card.certificate_der, "revoked")
    with caplog.at_level(logging.WARNING, logger=jpki.__name__):
        assert store.verify(issue(ca).certificate_der)
    assert "nextUpdate" in caplog.text
    assert store.revoked_serials()[0].reason is None


def test_from_paths_reads_pem_and_der_folders(ca, tmp_path):
    anchors, crls = tmp_path / "anchors", tmp_path / "crls"
    anchors.mkdir()
    crls.mkdir()
    rogue = TestJpkiCA.create(key=cached_key("rogue"))
    (anchors / "jlis.der").write_bytes(ca.certificate.public_bytes(serialization.Encoding.DER))
    (anchors / "other.pem").write_bytes(pem(rogue.certificate, ca.certificate))
    first, second = issue(ca), issue(ca)
    (crls / "a.crl").write_bytes(ca.crl([(first.serial_number, None)]).public_bytes(serialization.Encoding.DER))
    (crls / "b.pem").write_bytes(pem(ca.crl([(second.serial_number, x509.ReasonFlags.superseded)])))
    store = jpki.JpkiTrustStore.from_paths(anchors, crls, accept_test_cards=True)
    refused(store, first.certificate_der, "revoked")
    refused(store, second.certificate_der, "revoked")
    assert store.verify(issue(rogue).certificate_der)


def test_corrupt_files_raise_at_load_naming_the_file(ca, tmp_path):
    (tmp_path / "ca.pem").write_bytes(pem(ca.certificate))
    (tmp_path / "broken.crl").write_bytes(b"\x30\x03\x02\x01")
    with pytest.raises(jpki.JpkiError, match="broken.crl") as caught:
        jpki.JpkiTrustStore.from_paths(tmp_path / "ca.pem", tmp_path / "broken.crl", accept_test_cards=True)
    assert caught.value.code == "malformed"
    (tmp_path / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(jpki.JpkiError, match="broken.pem"):
        jpki.JpkiTrustStore.from_paths(tmp_path / "broken.pem", None, accept_test_cards=True)
    with pytest.raises(jpki.JpkiError, match="does not exist"):
        jpki.JpkiTrustStore.from_paths(tmp_path / "ca.pem", tmp_path / "absent", accept_test_cards=True)


def test_reload_crls_applies_and_keeps_old_on_error(ca, tmp_path):
    card = issue(ca)
    store = trusting([ca.certificate])
    assert store.verify(card.certificate_der)
    path = tmp_path / "current.crl"
    path.write_bytes(pem(ca.crl([(card.serial_number, x509.ReasonFlags.cessation_of_operation)])))
    entries = store.reload_crls(path)
    assert entries == [(ca.certificate.subject.public_bytes(), card.serial_number, "cessationOfOperation")]
    refused(store, card.certificate_der, "revoked")
    path.write_bytes(b"garbage")
    with pytest.raises(jpki.JpkiError):
        store.reload_crls(path)
    refused(store, card.certificate_der, "revoked")


# --- profile: algorithm, key usage, policy -----------------------------------


def test_small_rsa_key_is_refused(ca, store):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    refused(store, issue(ca, key=small).certificate_der, "bad_algorithm")


@pytest.mark.parametrize(
    "overrides",
    [
        {"key_usage": ("digital_signature",)},
        {"key_usage": ("content_commitment",)},
        {"key_usage": ("digital_signature", "content_commitment", "key_cert_sign")},
        {"key_usage_critical": False},
        {"key_usage": None},
    ],
    ids=["no-nonrepudiation", "no-digitalsignature", "certsign", "non-critical", "absent"],
)
def test_bad_key_usage(ca, store, overrides):
    refused(store, issue(ca, **overrides).certificate_der, "bad_key_usage")


@pytest.mark.parametrize("policy_oid", ["1.2.392.200149.8.5.1.2.20", "2.5.29.32.0", None])
def test_bad_policy(ca, store, policy_oid):
    refused(store, issue(ca, policy_oid=policy_oid).certificate_der, "bad_policy")


# --- profile: subjectAltName attributes --------------------------------------


@pytest.mark.parametrize("attribute", list(jpki.ATTRIBUTE_OIDS))
def test_each_missing_attribute(ca, store, attribute):
    error = refused(store, issue(ca, omit_attributes=[attribute]).certificate_der, "missing_attribute")
    assert attribute in error.description


def test_no_subject_alt_name(ca, store):
    refused(store, issue(ca, omit_attributes=list(jpki.ATTRIBUTE_OIDS)).certificate_der, "missing_attribute")


def test_duplicate_attribute(ca, store):
    refused(store, issue(ca, extra_attributes=[("gender", "2")]).certificate_der, "bad_attribute")


@pytest.mark.parametrize(
    "overrides",
    [
        {"gender": "0"},
        {"gender": "4"},
        {"gender": "１"},
        {"date_of_birth": "619800101"},
        {"date_of_birth": "41980010"},
        {"date_of_birth": "4198001011"},
        {"date_of_birth": "４19800101"},
        {"date_of_birth": "41980010a"},
        {"name": ""},
        {"name_substitution": "0x0"},
        {"address": "あ" * 201},
        {"address_substitution": "?"},
    ],
)
def test_bad_attribute_values(ca, store, overrides):
    error = refused(store, issue(ca, **overrides).certificate_der, "bad_attribute")
    assert not any(value and value in error.description for value in overrides.values())


def test_long_address_at_the_limit_is_accepted(ca, store):
    assert store.verify(issue(ca, address="あ" * 200).certificate_der).attributes.address == "あ" * 200


@pytest.mark.parametrize(
    ("date_of_birth", "gender", "birthdate", "claim"),
    [
        ("419800101", "1", datetime.date(1980, 1, 1), "male"),
        ("520200229", "2", datetime.date(2020, 2, 29), "female"),
        ("019800101", "3", None, None),
        ("419800230", "3", None, None),
        ("419800000", "3", None, None),
    ],
)
def test_birthdate_and_gender_claim(date_of_birth, gender, birthdate, claim):
    attributes = jpki.JpkiAttributes("A　B", "000", gender, date_of_birth, "X", "0")
    assert (attributes.birthdate, attributes.gender_claim) == (birthdate, claim)


# --- malformed input ----------------------------------------------------------


@pytest.mark.parametrize("der", [b"", b"not a certificate", b"\x30\x82\x01\x00"])
def test_malformed_certificate(store, der):
    refused(store, der, "malformed")


def test_truncated_certificate_and_bad_chain(ca, store):
    der = issue(ca).certificate_der
    refused(store, der[:-10], "malformed")
    refused(store, der, "malformed", chain_der=[b"\x00"])


# --- enrolment binding signature ----------------------------------------------


def test_binding_message_format():
    message = jpki.binding_message(b"\xfb\xff", b"spki")
    assert message == b"jpki-enroll-v1:-_8:b-7MjBbFVR2f6z61934tp3O_aL2e-cUpJ86yyG5WiSs"


def test_binding_signature_verifies(ca, store):
    card = issue(ca)
    verified = store.verify(card.certificate_der)
    message = jpki.binding_message(CHALLENGE, SPKI)
    jpki.verify_binding_signature(verified, message, card.sign_binding(CHALLENGE, SPKI))


@pytest.mark.parametrize("case", ["other-challenge", "other-key", "other-card", "garbage"])
def test_binding_signature_refused(ca, store, case):
    card = issue(ca)
    other_card = issue(ca, key=cached_key("card2"))
    verified = store.verify(card.certificate_der)
    signature = {
        "other-challenge": lambda: card.sign_binding(b"\x02" * 32, SPKI),
        "other-key": lambda: card.sign_binding(CHALLENGE, SPKI + b"\x00"),
        "other-card": lambda: other_card.sign_binding(CHALLENGE, SPKI),
        "garbage": lambda: b"\x00" * 256,
    }[case]()
    with pytest.raises(jpki.JpkiError) as caught:
        jpki.verify_binding_signature(verified, jpki.binding_message(CHALLENGE, SPKI), signature)
    assert caught.value.code == "bad_signature"


# --- test CA persistence -------------------------------------------------------


def test_test_ca_save_and_load(ca, tmp_path):
    folder = tmp_path / "jpki-test"
    ca.save(folder)
    assert stat.S_IMODE((folder / "ca.key.pem").stat().st_mode) == 0o600
    loaded = TestJpkiCA.load(folder)
    assert loaded.certificate == ca.certificate
    assert trusting([loaded.certificate]).verify(issue(loaded).certificate_der)
