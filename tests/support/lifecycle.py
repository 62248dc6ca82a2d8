"""Helpers for the certificate-lifecycle tests (issue 4): CLI runs, logins, CRL/OCSP over HTTP.

The operator commands run in-process with ``idp.cli.main`` under the same ``IDP_*``
environment as the live server they act on, exactly as an operator shell would.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp import cli
from idp.proofing.demo_card import TestCard, cached_key
from idp.storage.models import AuditEntry, CredentialLockout, DeviceCertificate
from tests.support.rp import RelyingParty, TokenResult, browser_login
from tests.support.wallet import Enrolled, Wallet, WalletError

RP_REDIRECT = "http://127.0.0.1:9/cb"  # never contacted: the browser walk stops at the redirect URI
DER = serialization.Encoding.DER


def card(idp: Any, **overrides: Any) -> TestCard:
    """A new person's card (a new serial); RSA keys are reused because generating them is slow."""
    overrides.setdefault("key", cached_key("lifecycle-card"))
    return idp.card(**overrides)


def rp(idp: Any, category: str = "municipal", scope: str = "openid profile address") -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=RP_REDIRECT, rp_category=category, scope=scope)


def txn_of(location: str) -> str:
    txn = dict(parse_qsl(urlsplit(location).query)).get("txn")
    assert txn, f"no txn in {location}"
    return txn


def login(idp: Any, client: RelyingParty, device: Enrolled, browser: requests.Session | None = None) -> TokenResult:
    """A full login at ``client`` with ``device``: /authorize → /login → /consent → tokens."""
    with contextlib.ExitStack() as stack:
        if browser is None:
            browser = stack.enter_context(requests.Session())
        location = client.start(browser)
        wallet = idp.wallet(browser)
        return client.finish(browser_login(browser, idp.base_url, location, wallet, device))


def attempt_login(idp: Any, client: RelyingParty, device: Enrolled, **overrides: Any) -> WalletError | dict:
    """One assertion for a fresh transaction; returns the WalletError when refused.

    ``overrides`` go to ``SoftAuthenticator.get`` (``counter``, ``sign_with``…).
    """
    with requests.Session() as browser:
        txn = txn_of(client.start(browser))
        wallet = idp.wallet(browser)
        try:
            return wallet.login(txn, authenticator=device, **overrides)
        except WalletError as exc:
            return exc


def refused(outcome: WalletError | dict, error: str, status: int | None = None) -> WalletError:
    assert isinstance(outcome, WalletError), f"expected a refusal {error!r}, got {outcome!r}"
    assert outcome.error == error, (outcome.status, outcome.body)
    assert 400 <= outcome.status < 500
    if status is not None:
        assert outcome.status == status
    assert isinstance(outcome.description, str) and outcome.description
    return outcome


# --- the operator's command line ----------------------------------------------------


def cli_env(idp: Any) -> dict[str, str]:
    """The ``IDP_*`` environment of the running server ``idp``."""
    s = idp.settings
    env = {
        "IDP_ISSUER": s.issuer,
        "IDP_KEYS_DIR": str(s.keys_dir),
        "IDP_INSTANCE_DIR": str(s.instance_dir),
        "IDP_DATABASE_URL": s.database_url,
        "IDP_JPKI_TRUST_ANCHORS": str(s.jpki_trust_anchors),
        "IDP_RATE_LIMIT_PER_MINUTE": "0",
        "IDP_KEYS_REFRESH_SECONDS": str(s.keys_refresh_seconds),  # the deployment's, as `idp keys rotate` checks
    }
    if s.jpki_crls is not None:
        env["IDP_JPKI_CRLS"] = str(s.jpki_crls)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line an error prints; asserts it is one line and no traceback."""
        assert self.code != 0, self
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.err!r}"
        assert "Traceback" not in self.err
        assert lines[0].startswith("idp: ")
        return lines[0]


def run_cli(idp: Any, monkeypatch: pytest.MonkeyPatch, *argv: str) -> CliResult:
    for name in [k for k in os.environ if k.startswith("IDP_") and k != "IDP_TEST_DATABASE_URL"]:
        monkeypatch.delenv(name)
    for name, value in cli_env(idp).items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


# --- the database (read to check what changed; written only to simulate time) --------


@contextlib.contextmanager
def db(idp: Any) -> Iterator[Session]:
    with idp.services().db.transaction() as session:
        yield session


def device_row(idp: Any, serial: str) -> DeviceCertificate:
    with db(idp) as session:
        device = session.get(DeviceCertificate, serial)
        assert device is not None
        session.expunge(device)
        return device


@dataclass
class LockState:
    """A credential's lock-out counters for the test client's address (all tests send from
    127.0.0.1, so there is at most one row per credential)."""

    failed_attempts: int = 0
    lock_count: int = 0
    locked_until: Any = None


def lock_state(idp: Any, serial: str) -> LockState:
    with db(idp) as session:
        rows = session.scalars(select(CredentialLockout).where(CredentialLockout.device_serial == serial)).all()
        assert len(rows) <= 1, "failures from more than one address"
        return LockState(rows[0].failed_attempts, rows[0].lock_count, rows[0].locked_until) if rows else LockState()


def set_lock_state(idp: Any, serial: str, **values: Any) -> None:
    """Edit the lock-out row of ``serial`` (creating it for this address if needed)."""
    with db(idp) as session:
        row = session.scalars(select(CredentialLockout).where(CredentialLockout.device_serial == serial)).first()
        if row is None:
            row = CredentialLockout(device_serial=serial, address=loopback_address_key(idp), failed_attempts=0,
                                    lock_count=0)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)


def loopback_address_key(idp: Any) -> str:
    """The lock-out key the IdP uses for a test client on 127.0.0.1."""
    with idp.app.test_request_context("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        from idp.device.assertions import client_address_key

        return client_address_key()


def audit_count(idp: Any) -> int:
    with db(idp) as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def audit_events(idp: Any, after: int = 0) -> list[tuple[str, dict]]:
    """Entries in the order they were written, skipping the first ``after`` (an ``audit_count``).

    ``seq`` counts within one chain, and PostgreSQL spreads writers over several chains, so the
    global order is by time."""
    with db(idp) as session:
        entries = select(AuditEntry).order_by(AuditEntry.at, AuditEntry.chain, AuditEntry.seq).offset(after)
        return [(e.event, dict(e.data)) for e in session.scalars(entries)]


# --- CRL and OCSP over HTTP ------------------------------------------------------------


def ca_certificate(idp: Any) -> x509.Certificate:
    response = requests.get(idp.base_url + "/ca/certificate", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pkix-cert"
    return x509.load_der_x509_certificate(response.content)


def fetch_crl(idp: Any) -> x509.CertificateRevocationList:
    response = requests.get(idp.base_url + "/ca/crl", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    assert crl.is_signature_valid(ca_certificate(idp).public_key())
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def crl_reason(crl: x509.CertificateRevocationList, serial: str) -> str | None:
    """The CRL entry's reason name for ``serial`` (``"unspecified"`` when absent); None: not listed."""
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    if entry is None:
        return None
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return "unspecified"


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def post_ocsp(idp: Any, body: bytes) -> ocsp.OCSPResponse:
    response = requests.post(idp.base_url + "/ca/ocsp", data=body,
                             headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def ocsp_status(idp: Any, device: Enrolled) -> tuple[ocsp.OCSPCertStatus, ocsp.OCSPResponse]:
    """Ask the responder named in the certificate's AIA about ``device``; the answer is verified."""
    issuer = ca_certificate(idp)
    certificate = device.certificate
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.OCSP]
    assert urls == [idp.base_url + "/ca/ocsp"]
    answer = post_ocsp(idp, ocsp_request(certificate, issuer))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    issuer.public_key().verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))
    assert answer.serial_number == certificate.serial_number
    return answer.certificate_status, answer


def cosign(old: Enrolled, challenge_b64url: str) -> dict:
    """An assertion by ``old``'s device key over an enrolment challenge (the renewal co-signature)."""
    return old.authenticator.get({"challenge": challenge_b64url}, credential_id=old.credential_id)


def enrol_renewal(idp: Any, new_card: TestCard, *, cosigner: Enrolled | None = None,
                  wallet: Wallet | None = None) -> Enrolled:
    """Enrol a new device with ``new_card``, co-signed by ``cosigner``'s device key when given."""
    wallet = wallet or idp.wallet()
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    tamper = {"body": {"renewal": {"credential": cosign(cosigner, start.public_key["challenge"])}}} if cosigner else None
    finished = wallet.finish(start, new_card, authenticator, tamper=tamper)
    answer = wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                             credential_id=finished.credential_id)
    return Enrolled(finished.enrollment_id, answer["serial"], finished.certificate_der, finished.ca_chain,
                    authenticator, finished.credential_id, finished.raw)

