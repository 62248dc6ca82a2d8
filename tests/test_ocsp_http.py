"""The OCSP responder over HTTP (RFC 6960 Appendix A.1), asked with cryptography's
OCSPRequestBuilder exactly as a relying party's library would."""

from __future__ import annotations

import base64
import datetime as dt
import os

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from idp.ca.authority import CertificateAuthority
from idp.ca.profile import issue_device_certificate
from tests.support.lifecycle import (
    DER,
    ca_certificate,
    card,
    ocsp_request,
    ocsp_status,
    post_ocsp,
    run_cli,
)
from tests.test_ca import lint_ocsp_der


@pytest.fixture(scope="module")
def active(idp):
    return idp.wallet().enroll(card(idp))


def test_good_with_sha1_and_sha256_cert_ids_and_nonce_echo(idp, active):
    issuer = ca_certificate(idp)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        nonce = os.urandom(32)
        answer = post_ocsp(idp, ocsp_request(active.certificate, issuer, nonce=nonce, algorithm=algorithm))
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert answer.hash_algorithm.name == algorithm.name
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        now = dt.datetime.now(dt.timezone.utc)
        assert answer.this_update_utc <= now + dt.timedelta(seconds=5) < answer.next_update_utc


def test_get_form_answers_like_post(idp, active):
    request = ocsp_request(active.certificate, ca_certificate(idp))
    url = idp.base_url + "/ca/ocsp/" + base64.b64encode(request).decode()
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.content).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_revoked_after_the_operator_revokes(idp, monkeypatch):
    device = idp.wallet().enroll(card(idp))
    assert run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "affiliationChanged").code == 0
    status, answer = ocsp_status(idp, device)
    assert status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.affiliation_changed
    assert lint_ocsp_der(answer.public_bytes(DER)) == []


def test_pending_certificate_is_not_good(idp):
    pending = idp.wallet().enroll(card(idp), activate=False)
    status, answer = ocsp_status(idp, pending)
    assert status is ocsp.OCSPCertStatus.UNKNOWN
    assert lint_ocsp_der(answer.public_bytes(DER)) == []


def test_serial_never_issued_and_other_issuer_are_unknown(idp, active):
    issuer = ca_certificate(idp)
    stranger = CertificateAuthority.create("Another CA", "Another")
    now = dt.datetime.now(dt.timezone.utc)
    forged = issue_device_certificate(
        stranger, public_key=active.certificate.public_key(), serial_number=active.certificate.serial_number,
        account_ref="acct-x", not_before=now, not_after=now + dt.timedelta(days=1),
        crl_url="http://id.example.jp/ca/crl", ocsp_url="http://id.example.jp/ca/ocsp",
        ca_issuers_url="http://id.example.jp/ca/certificate", hardware_attested=False)
    # the same serial, but named under another issuer: not this responder's certificate
    answer = post_ocsp(idp, ocsp_request(forged, stranger.certificate))
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # this issuer, a serial it never issued
    never = x509.CertificateBuilder().subject_name(issuer.subject).issuer_name(issuer.subject).public_key(
        active.certificate.public_key()).serial_number(12345).not_valid_before(now).not_valid_after(
        now + dt.timedelta(days=1)).sign(stranger.private_key, hashes.SHA256())
    answer = post_ocsp(idp, ocsp_request(never, issuer))
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert answer.serial_number == 12345


@pytest.mark.parametrize("body", [
    b"",
    b"\x30\x03\x02\x01\x01",
    b"not DER at all",
    b"\x30" + b"\xff" * 20,
])
def test_malformed_requests_get_malformed_request(idp, body):
    answer = post_ocsp(idp, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_malformed_get_request(idp):
    response = requests.get(idp.base_url + "/ca/ocsp/%%%not-base64", timeout=10)
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.content).response_status is \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_request_with_two_certificates_is_malformed(idp, active):
    """cryptography builds single requests only; splice a second Request into the list by hand."""
    one = ocsp_request(active.certificate, ca_certificate(idp))
    # OCSPRequest ::= SEQUENCE { tbsRequest SEQUENCE { requestList SEQUENCE OF Request } }
    from pyasn1.codec.der import decoder, encoder
    from pyasn1_alt_modules import rfc6960

    parsed, _ = decoder.decode(one, asn1Spec=rfc6960.OCSPRequest())
    request_list = parsed["tbsRequest"]["requestList"]
    request_list.append(request_list[0])
    answer = post_ocsp(idp, encoder.encode(parsed))
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_wrong_content_type_or_oversized_request_is_a_4xx(idp, active):
    request = ocsp_request(active.certificate, ca_certificate(idp))
    response = requests.post(idp.base_url + "/ca/ocsp", data=request,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = requests.post(idp.base_url + "/ca/ocsp", data=b"\x30" * 5000,
                             headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
