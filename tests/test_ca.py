"""Tests for the trust service CA: CA certificate, device profile, CRL and OCSP responder.

Profiles are checked field by field and, independently, with pkilint's RFC 5280 /
RFC 6960 validators (the ones its `lint_pkix_cert`, `lint_crl` and `lint_ocsp_response`
commands build).
"""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID
from pkilint import loader, pkix
from pkilint.pkix import certificate as lint_certificate
from pkilint.pkix import crl as lint_crl
from pkilint.pkix import extension as lint_extension
from pkilint.pkix import name as lint_name
from pkilint.pkix import ocsp as lint_ocsp
from pkilint.validation import ValidationFindingSeverity
from pyasn1.codec.der import decoder as asn1_decoder
from pyasn1.codec.der import encoder as asn1_encoder
from pyasn1_alt_modules import rfc6960

from idp.ca import ocsp
from idp.ca.authority import CERT_FILE, KEY_FILE, CertificateAuthority
from idp.signing.files import FileKeyBackend
from idp.ca.crl import REASON_NAMES, RevokedEntry, build_crl, parse_reason
from idp.ca.profile import (
    POLICY_DEVICE_HARDWARE,
    POLICY_DEVICE_SOFTWARE,
    issue_device_certificate,
    new_serial_number,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
BASE = "http://id.example.jp"  # pkilint's URI check rejects hosts without a TLD, e.g. localhost
CRL_URL, OCSP_URL, CA_ISSUERS_URL = f"{BASE}/ca/crl", f"{BASE}/ca/ocsp", f"{BASE}/ca/certificate"
DER = serialization.Encoding.DER


# --- fixtures and helpers ----------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Example Trust Service CA", "Example Trust Service", now=NOW)


@pytest.fixture(scope="module")
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(ca: CertificateAuthority, public_key: ec.EllipticCurvePublicKey, **overrides) -> x509.Certificate:
    arguments = dict(
        public_key=public_key,
        serial_number=new_serial_number(),
        account_ref="acct-7QX2M9TFKD",
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=365),
        crl_url=CRL_URL,
        ocsp_url=OCSP_URL,
        ca_issuers_url=CA_ISSUERS_URL,
        hardware_attested=True,
    )
    arguments.update(overrides)
    return issue_device_certificate(ca, **arguments)


@pytest.fixture(scope="module")
def device_cert(ca, device_key) -> x509.Certificate:
    return issue(ca, device_key.public_key())


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, algorithm=None, nonce: bytes | None = None) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def answer(ca: CertificateAuthority, request: bytes, status: ocsp.CertStatus) -> x509_ocsp.OCSPResponse:
    return x509_ocsp.load_der_ocsp_response(ocsp.respond(ca, request, lookup=lambda serial: status, now=NOW))


def assert_signed_by(ca: CertificateAuthority, response: x509_ocsp.OCSPResponse) -> None:
    assert response.response_status is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    ca.certificate.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )
    assert response.responder_key_hash == ca.subject_key_identifier.digest
    assert response.responder_name is None
    assert response.certificates == []


def ext(obj, oid: x509.ObjectIdentifier) -> x509.Extension:
    return obj.extensions.get_extension_for_oid(oid)


# --- CA certificate ----------------------------------------------------------------


def test_ca_certificate_profile(ca):
    cert = ca.certificate
    assert cert.version is x509.Version.v3
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert cert.subject.rfc4514_string() == "CN=Example Trust Service CA,O=Example Trust Service,C=JP"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    basic = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ext(cert, ExtensionOID.KEY_USAGE)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert not usage.value.content_commitment and not usage.value.key_agreement
    assert ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value == x509.SubjectKeyIdentifier.from_public_key(
        cert.public_key()
    )
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=3650)
    assert ca.certificate_der == cert.public_bytes(DER)
    assert ca.organization == "Example Trust Service"


def test_save_and_load_round_trip(tmp_path):
    backend = FileKeyBackend(tmp_path)
    ca = CertificateAuthority.create("Example Trust Service CA", "Example Trust Service", now=NOW,
                                     key=backend.generate_ca_key())
    folder = tmp_path / "ca"
    ca.save(folder)
    assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(folder, backend.ca_key())
    assert loaded.certificate_der == ca.certificate_der
    assert loaded.private_key.private_numbers() == ca.private_key.private_numbers()
    ca.save(folder)  # overwriting the certificate leaves the key alone
    assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [CERT_FILE, KEY_FILE]


def test_load_refuses_a_key_of_another_ca(ca, tmp_path):
    ca.save(tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        CertificateAuthority.load(tmp_path, FileKeyBackend(tmp_path / "other").generate_ca_key())


# --- device certificate ------------------------------------------------------------


def test_device_certificate_profile(ca, device_key, device_cert):
    cert = device_cert
    assert cert.version is x509.Version.v3
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.public_key() == device_key.public_key()
    assert cert.subject.rfc4514_string() == "CN=acct-7QX2M9TFKD,O=Example Trust Service,C=JP"
    assert cert.issuer == ca.certificate.subject
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (NOW, NOW + dt.timedelta(days=365))

    basic = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert basic.critical and basic.value.ca is False
    usage = ext(cert, ExtensionOID.KEY_USAGE)
    assert usage.critical and usage.value.digital_signature
    assert not any(
        getattr(usage.value, flag)
        for flag in (
            "content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"
        )
    )
    assert ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value == x509.SubjectKeyIdentifier.from_public_key(
        device_key.public_key()
    )
    assert ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier == ca.subject_key_identifier.digest

    points = ext(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    assert [p.full_name for p in points] == [[x509.UniformResourceIdentifier(CRL_URL)]]
    access_descriptions = ext(cert, ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    access = {(d.access_method, d.access_location.value) for d in access_descriptions}
    assert access == {
        (x509.AuthorityInformationAccessOID.OCSP, OCSP_URL),
        (x509.AuthorityInformationAccessOID.CA_ISSUERS, CA_ISSUERS_URL),
    }
    policies = ext(cert, ExtensionOID.CERTIFICATE_POLICIES).value
    assert [p.policy_identifier for p in policies] == [POLICY_DEVICE_HARDWARE]
    assert ExtensionOID.EXTENDED_KEY_USAGE not in {e.oid for e in cert.extensions}
    critical = {e.oid for e in cert.extensions if e.critical}
    assert critical == {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE}


def test_software_key_gets_the_software_policy(ca, device_key):
    cert = issue(ca, device_key.public_key(), hardware_attested=False)
    assert [p.policy_identifier for p in ext(cert, ExtensionOID.CERTIFICATE_POLICIES).value] == [POLICY_DEVICE_SOFTWARE]
    assert POLICY_DEVICE_SOFTWARE != POLICY_DEVICE_HARDWARE


def test_validity_never_outlives_the_ca(ca, device_key):
    cert = issue(ca, device_key.public_key(), not_after=NOW + dt.timedelta(days=5000))
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_naive_times_are_utc_and_fractions_dropped(ca, device_key):
    naive = NOW.replace(tzinfo=None, microsecond=123456)
    cert = issue(ca, device_key.public_key(), not_before=naive)
    assert cert.not_valid_before_utc == NOW


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"public_key": ec.generate_private_key(ec.SECP384R1()).public_key()}, "P-256"),
        ({"account_ref": "123456789012"}, "individual number"),
        ({"account_ref": "x" * 65}, "1 to 64"),
        ({"not_after": NOW}, "validity period is empty"),
    ],
)
def test_issue_refuses_bad_input(ca, device_key, overrides, message):
    with pytest.raises(ValueError, match=message):
        issue(ca, overrides.pop("public_key", device_key.public_key()), **overrides)


def test_new_serial_numbers_are_positive_random_and_fit_20_octets():
    serials = {new_serial_number() for _ in range(100)}
    assert len(serials) == 100
    assert all(0 < s < 2**159 for s in serials)
    assert max(s.bit_length() for s in serials) > 64


# --- CRL -------------------------------------------------------------------------


def test_crl_lists_entries_with_reasons(ca):
    entries = [
        RevokedEntry(101, NOW - dt.timedelta(hours=3), "keyCompromise"),
        RevokedEntry(102, NOW - dt.timedelta(hours=2), "cessationOfOperation"),
        RevokedEntry(103, NOW - dt.timedelta(hours=1), "certificateHold"),
        RevokedEntry(104, NOW, "superseded"),
    ]
    crl = x509.load_der_x509_crl(
        build_crl(ca, revoked=entries, crl_number=7, this_update=NOW, next_update=NOW + dt.timedelta(days=1))
    )
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    assert crl.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + dt.timedelta(days=1))
    assert ext(crl, ExtensionOID.CRL_NUMBER).value.crl_number == 7
    assert ext(crl, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier == ca.subject_key_identifier.digest
    for entry in entries:
        listed = crl.get_revoked_certificate_by_serial_number(entry.serial_number)
        assert listed.revocation_date_utc == entry.revocation_date
        reason = listed.extensions.get_extension_for_class(x509.CRLReason)
        assert reason.value.reason is parse_reason(entry.reason) and not reason.critical
    assert crl.get_revoked_certificate_by_serial_number(105) is None


@pytest.mark.parametrize("reason", ["unspecified", None])
def test_unspecified_reason_is_not_encoded(ca, reason):
    crl = x509.load_der_x509_crl(
        build_crl(
            ca,
            revoked=[RevokedEntry(201, NOW, reason)],
            crl_number=8,
            this_update=NOW,
            next_update=NOW + dt.timedelta(days=1),
        )
    )
    assert len(crl.get_revoked_certificate_by_serial_number(201).extensions) == 0


def test_reason_names():
    protocol_names = {
        "keyCompromise", "cessationOfOperation", "superseded", "affiliationChanged", "certificateHold", "unspecified"
    }
    assert protocol_names <= set(REASON_NAMES)
    for name in REASON_NAMES:
        assert parse_reason(name).value == name
    assert parse_reason("KEYCOMPROMISE") is x509.ReasonFlags.key_compromise
    for bad in ("lostPhone", "removeFromCRL", ""):
        with pytest.raises(ValueError, match="unknown revocation reason.*keyCompromise"):
            parse_reason(bad)
    with pytest.raises(ValueError):
        RevokedEntry(1, NOW, "lostPhone")


def test_crl_refuses_bad_input(ca):
    with pytest.raises(ValueError, match="next_update"):
        build_crl(ca, revoked=[], crl_number=1, this_update=NOW, next_update=NOW)
    with pytest.raises(ValueError, match="crl_number"):
        build_crl(ca, revoked=[], crl_number=2**159, this_update=NOW, next_update=NOW + dt.timedelta(days=1))


# --- OCSP ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()])
def test_ocsp_good(ca, device_cert, algorithm):
    seen = []
    response = x509_ocsp.load_der_ocsp_response(
        ocsp.respond(
            ca,
            ocsp_request(device_cert, ca.certificate, algorithm),
            lookup=lambda serial: seen.append(serial) or ocsp.CertStatus("good"),
            now=NOW,
        )
    )
    assert seen == [device_cert.serial_number]
    assert_signed_by(ca, response)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == device_cert.serial_number
    assert response.hash_algorithm.name == algorithm.name
    assert response.this_update_utc == NOW
    assert response.next_update_utc == NOW + ocsp.RESPONSE_VALIDITY
    assert len(response.extensions) == 0


def test_ocsp_revoked(ca, device_cert):
    revoked_at = NOW - dt.timedelta(hours=1)
    status = ocsp.CertStatus("revoked", revoked_at, "keyCompromise")
    response = answer(ca, ocsp_request(device_cert, ca.certificate), status)
    assert_signed_by(ca, response)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_ocsp_revoked_unspecified_has_no_reason(ca, device_cert):
    response = answer(ca, ocsp_request(device_cert, ca.certificate), ocsp.CertStatus("revoked", NOW, "unspecified"))
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is None


def test_ocsp_unknown_from_lookup(ca, device_cert):
    response = answer(ca, ocsp_request(device_cert, ca.certificate), ocsp.CertStatus("unknown"))
    assert_signed_by(ca, response)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_other_issuer_is_unknown_without_lookup(ca, device_key):
    other = CertificateAuthority.create("Other CA", "Other", now=NOW)
    foreign = issue(other, device_key.public_key())

    def lookup(serial: int) -> ocsp.CertStatus:
        raise AssertionError("lookup must not run for another issuer's certificate")

    response = x509_ocsp.load_der_ocsp_response(
        ocsp.respond(ca, ocsp_request(foreign, other.certificate), lookup=lookup, now=NOW)
    )
    assert_signed_by(ca, response)
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.UNKNOWN
    assert response.issuer_key_hash == other.cert_id_hashes(hashes.SHA1())[1]


def test_ocsp_nonce_is_echoed(ca, device_cert):
    nonce = bytes(range(32))
    response = answer(ca, ocsp_request(device_cert, ca.certificate, nonce=nonce), ocsp.CertStatus("good"))
    assert_signed_by(ca, response)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def _wrong_length_request(ca: CertificateAuthority, cert: x509.Certificate) -> bytes:
    """A CertID claiming SHA-256 but carrying 48-byte (SHA-384) hashes: relabel the OID."""
    sha384_oid = bytes.fromhex("0609608648016503040202")
    request = ocsp_request(cert, ca.certificate, hashes.SHA384())
    assert request.count(sha384_oid) == 1
    patched = request.replace(sha384_oid, bytes.fromhex("0609608648016503040201"))
    parsed = x509_ocsp.load_der_ocsp_request(patched)
    assert parsed.hash_algorithm.name == "sha256" and len(parsed.issuer_key_hash) == 48
    return patched


def _decoded_request(ca: CertificateAuthority, cert: x509.Certificate) -> rfc6960.OCSPRequest:
    """A request decoded with pyasn1, to make requests cryptography's builder refuses to."""
    request, _ = asn1_decoder.decode(ocsp_request(cert, ca.certificate), asn1Spec=rfc6960.OCSPRequest())
    return request


def _two_certificate_request(ca: CertificateAuthority, cert: x509.Certificate) -> bytes:
    """A valid RFC 6960 request asking about two certificates (cryptography builds only one)."""
    request = _decoded_request(ca, cert)
    request_list = request["tbsRequest"]["requestList"]
    request_list.append(request_list[0])
    assert len(request_list) == 2
    return asn1_encoder.encode(request)


def _negative_serial_request(ca: CertificateAuthority, cert: x509.Certificate) -> bytes:
    """A request for serial number -5, which no conforming certificate has."""
    request = _decoded_request(ca, cert)
    request["tbsRequest"]["requestList"][0]["reqCert"]["serialNumber"] = -5
    return asn1_encoder.encode(request)


@pytest.mark.parametrize(
    "make_request",
    [
        lambda ca, cert: b"not an OCSP request",
        lambda ca, cert: b"",
        lambda ca, cert: ocsp_request(cert, ca.certificate)[:-3],
        lambda ca, cert: ocsp_request(cert, ca.certificate, hashes.SHA512()),
        lambda ca, cert: ocsp_request(cert, ca.certificate, nonce=b""),
        lambda ca, cert: ocsp_request(cert, ca.certificate, nonce=b"n" * 129),
        _wrong_length_request,
        _two_certificate_request,
        _negative_serial_request,
    ],
    ids=[
        "garbage", "empty", "truncated", "sha512", "empty-nonce", "long-nonce", "hash-length", "two-certificates",
        "negative-serial",
    ],
)
def test_ocsp_malformed_request(ca, device_cert, make_request):
    response = x509_ocsp.load_der_ocsp_response(
        ocsp.respond(ca, make_request(ca, device_cert), lookup=lambda serial: ocsp.CertStatus("good"), now=NOW)
    )
    assert response.response_status is x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_accepts_the_longest_nonce(ca, device_cert):
    nonce = b"n" * ocsp.MAX_NONCE_LENGTH
    response = answer(ca, ocsp_request(device_cert, ca.certificate, nonce=nonce), ocsp.CertStatus("good"))
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


@pytest.mark.parametrize(
    "arguments",
    [("valid",), ("revoked",), ("good", NOW), ("good", None, "keyCompromise"), ("revoked", NOW, "lostPhone")],
)
def test_cert_status_refuses_contradictions(arguments):
    with pytest.raises(ValueError):
        ocsp.CertStatus(*arguments)


# --- pkilint ---------------------------------------------------------------------

BLOCKING = ValidationFindingSeverity.ERROR  # and FATAL, which sorts before it


def _decoders():
    return [
        pkix.create_attribute_decoder(lint_name.ATTRIBUTE_TYPE_MAPPINGS),
        pkix.create_extension_decoder(lint_extension.EXTENSION_MAPPINGS),
    ]


def lint_certificate_der(der: bytes) -> list[str]:
    validator = lint_certificate.create_pkix_certificate_validator_container(
        lint_certificate.create_decoding_validators(
            lint_name.ATTRIBUTE_TYPE_MAPPINGS, lint_extension.EXTENSION_MAPPINGS
        ),
        [
            lint_certificate.create_issuer_validator_container([]),
            lint_certificate.create_validity_validator_container(),
            lint_certificate.create_subject_validator_container([]),
            lint_certificate.create_extensions_validator_container([]),
            lint_certificate.create_spki_validator_container([]),
        ],
    )
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    return _blocking(validator.validate(document.root))


def lint_crl_der(der: bytes) -> list[str]:
    validator = lint_crl.create_pkix_crl_validator_container(
        _decoders(),
        [
            lint_crl.create_issuer_validator_container([]),
            lint_crl.create_validity_validator_container([]),
            lint_crl.create_extensions_validator_container([]),
        ],
    )
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    return _blocking(validator.validate(document.root))


def lint_ocsp_der(der: bytes) -> list[str]:
    validator = lint_ocsp.create_pkix_ocsp_response_validator_container(
        [lint_ocsp.create_response_decoder(), *_decoders()], []
    )
    document = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "ocsp")
    return _blocking(validator.validate(document.root))


def _blocking(results) -> list[str]:
    return [
        f"{finding.finding!r} at {result.node.path}: {finding.message}"
        for result in results
        for finding in result.finding_descriptions
        if finding.finding.severity <= BLOCKING
    ]


def test_pkilint_ca_certificate(ca):
    assert lint_certificate_der(ca.certificate_der) == []


@pytest.mark.parametrize("hardware_attested", [True, False])
def test_pkilint_device_certificate(ca, device_key, hardware_attested):
    cert = issue(ca, device_key.public_key(), hardware_attested=hardware_attested)
    assert lint_certificate_der(cert.public_bytes(DER)) == []


@pytest.mark.parametrize("with_entries", [True, False])
def test_pkilint_crl(ca, with_entries):
    entries = [RevokedEntry(s, NOW, reason) for s, reason in enumerate(REASON_NAMES, start=300)] if with_entries else []
    der = build_crl(ca, revoked=entries, crl_number=9, this_update=NOW, next_update=NOW + dt.timedelta(days=1))
    assert lint_crl_der(der) == []


@pytest.mark.parametrize(
    "status", [ocsp.CertStatus("good"), ocsp.CertStatus("revoked", NOW, "certificateHold"), ocsp.CertStatus("unknown")]
)
def test_pkilint_ocsp_response(ca, device_cert, status):
    request = ocsp_request(device_cert, ca.certificate, nonce=bytes(32))
    assert lint_ocsp_der(ocsp.respond(ca, request, lookup=lambda serial: status, now=NOW)) == []
