"""The phone wallet app, simulated over HTTP against the wire contract (PROTOCOL.md §3–4).

Tests, the load benchmark and the conformance runner drive the IdP exactly as the
wallet app would: enrolment with a My Number Card (JPKI) and a device key, then logins
answering a transaction. Written only against PROTOCOL.md, never against the server's
code, so it catches the server drifting from the contract. Every step is a separate
method so negative tests can intervene between steps.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idp.proofing.demo_card import TestCard
from tests.support.authenticator import SoftAuthenticator, b64url, b64url_decode
from tests.support.http import HttpError, body_of

BINDING_PREFIX = b"jpki-enroll-v1:"
DEFAULT_TIMEOUT = 30.0
TAMPER_KEYS = frozenset({
    "binding_challenge",  # bytes: sign the binding over this challenge instead of the server's
    "binding_spki",  # bytes: sign the binding over this SPKI DER instead of the new credential's
    "signer",  # TestCard: sign the binding with this card's key (certificate unchanged)
    "signature",  # bytes: send this as the JPKI signature
    "certificate",  # bytes: send this DER as the JPKI certificate
    "create",  # dict: keyword arguments for SoftAuthenticator.create (origin, flags_override, ...)
    "enrollment_id",  # str: send this enrollment_id to /enroll/finish
    "body",  # dict: merged into the /enroll/finish JSON body; a None value deletes the member
})


class WalletError(HttpError):
    """The IdP answered a wallet request with a non-2xx status."""


@dataclass
class EnrollmentStart:
    """The answer of ``POST /enroll/begin`` (step 1)."""

    enrollment_id: str
    public_key: dict
    expires_in: int | None
    raw: dict

    @property
    def challenge(self) -> bytes:
        return b64url_decode(self.public_key["challenge"])


@dataclass
class EnrollmentFinish:
    """The answer of ``POST /enroll/finish`` (step 3): a pending device certificate."""

    enrollment_id: str
    status: str
    certificate_der: bytes
    ca_chain: list[bytes]
    activation: dict
    expires_in: int | None
    credential_id: bytes
    raw: dict

    @property
    def activation_options(self) -> dict:
        return self.activation.get("publicKey", self.activation)


@dataclass
class Enrolled:
    """A device enrolled through steps 1–4, ready to log in.

    ``serial`` is the hex string ``/enroll/activate`` returned (None when the
    enrolment was left pending with ``activate=False``).
    """

    enrollment_id: str
    serial: str | None
    certificate_der: bytes
    ca_chain: list[bytes]
    authenticator: SoftAuthenticator
    credential_id: bytes
    finish_response: dict = field(default_factory=dict, repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)


def binding_message(challenge: bytes, credential_spki_der: bytes) -> bytes:
    """The ASCII string the card signs (PROTOCOL.md §3 step 2), built from the contract alone."""
    spki_hash = hashlib.sha256(credential_spki_der).digest()
    return BINDING_PREFIX + b64url(challenge).encode() + b":" + b64url(spki_hash).encode()


def b64std(data: bytes) -> str:
    """Standard (padded) base64: the contract's encoding for DER fields and the JPKI signature."""
    return base64.b64encode(data).decode()


def _der(certificate: bytes | x509.Certificate) -> bytes:
    if isinstance(certificate, x509.Certificate):
        return certificate.public_bytes(serialization.Encoding.DER)
    return certificate


def _origin_of(url: str) -> str:
    """scheme://host[:port] without a default port, as a browser writes an origin."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class Wallet:
    """The wallet app: one HTTP session and the IdP base URL.

    ``origin`` is what the app's WebAuthn client writes into ``clientDataJSON.origin``
    (default: the base URL's origin; an Android app would use ``android:apk-key-hash:…``).
    ``rp_id`` is the WebAuthn RP ID new authenticators are bound to (default: the base
    URL's host, which PROTOCOL.md §1 says is the issuer's host).
    """

    def __init__(
        self,
        base_url: str,
        origin: str | None = None,
        session: requests.Session | None = None,
        *,
        rp_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin or _origin_of(self.base_url)
        self.rp_id = rp_id or urlsplit(self.base_url).hostname or ""
        self.session = session or requests.Session()
        self.timeout = timeout
        self.last_login_options: dict | None = None

    def with_session(self, session: requests.Session) -> Wallet:
        """The same app using another HTTP session (same-device login uses the browser's)."""
        return Wallet(self.base_url, self.origin, session, rp_id=self.rp_id, timeout=self.timeout)

    def new_authenticator(self, **kwargs: Any) -> SoftAuthenticator:
        """A fresh software authenticator for this IdP (the phone's secure area)."""
        return SoftAuthenticator(self.rp_id, self.origin, **kwargs)

    # transport -----------------------------------------------------------------
    def post(self, path: str, body: Mapping[str, Any] | None = None) -> requests.Response:
        """POST JSON and return the raw response, whatever its status (for negative tests)."""
        return self.session.post(
            self.base_url + path,
            json=dict(body or {}),
            headers={"Accept": "application/json"},
            timeout=self.timeout,
            allow_redirects=False,
        )

    def call(
        self, path: str, body: Mapping[str, Any] | None = None, *, raise_for_status: bool = True
    ) -> dict:
        """POST JSON and return the parsed answer; non-2xx raises :class:`WalletError`.

        With ``raise_for_status=False`` the parsed body is returned whatever the status.
        """
        response = self.post(path, body)
        parsed = body_of(response)
        if raise_for_status and not 200 <= response.status_code < 300:
            raise WalletError(response.status_code, parsed, response)
        return parsed

    # enrolment (PROTOCOL.md §3) ------------------------------------------------------
    def begin(self) -> EnrollmentStart:
        """Step 1: ``POST /enroll/begin`` with an empty JSON body."""
        answer = self.call("/enroll/begin", {})
        return EnrollmentStart(
            enrollment_id=answer["enrollment_id"],
            public_key=answer["publicKey"],
            expires_in=answer.get("expires_in"),
            raw=answer,
        )

    def finish_body(
        self,
        start: EnrollmentStart,
        card: TestCard,
        authenticator: SoftAuthenticator,
        *,
        jpki_chain: Iterable[bytes | x509.Certificate] = (),
        tamper: Mapping[str, Any] | None = None,
    ) -> dict:
        """Steps 2–3 up to the request: create the credential, sign the binding, build the JSON.

        ``tamper`` keys are listed in ``TAMPER_KEYS``; unknown keys are refused so a typo
        cannot silently turn a negative test into a positive one.
        """
        tamper = dict(tamper or {})
        unknown = set(tamper) - TAMPER_KEYS
        if unknown:
            raise ValueError(f"unknown tamper keys: {sorted(unknown)}")
        credential = authenticator.create(start.public_key, **tamper.get("create", {}))
        challenge = tamper.get("binding_challenge", start.challenge)
        spki = tamper.get("binding_spki", authenticator.public_key_spki_der())
        signer: TestCard = tamper.get("signer", card)
        signature = tamper.get("signature", signer.sign(binding_message(challenge, spki)))
        body: dict[str, Any] = {
            "enrollment_id": tamper.get("enrollment_id", start.enrollment_id),
            "credential": credential,
            "jpki": {
                "certificate": b64std(tamper.get("certificate", card.certificate_der)),
                "chain": [b64std(_der(c)) for c in jpki_chain],
                "signature": b64std(signature),
            },
        }
        for key, value in tamper.get("body", {}).items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def finish(
        self,
        start: EnrollmentStart,
        card: TestCard,
        authenticator: SoftAuthenticator,
        *,
        jpki_chain: Iterable[bytes | x509.Certificate] = (),
        tamper: Mapping[str, Any] | None = None,
    ) -> EnrollmentFinish:
        """Steps 2–3: ``POST /enroll/finish``; the IdP answers 201 with a pending certificate."""
        body = self.finish_body(start, card, authenticator, jpki_chain=jpki_chain, tamper=tamper)
        answer = self.call("/enroll/finish", body)
        return EnrollmentFinish(
            enrollment_id=body["enrollment_id"],
            status=answer.get("status", ""),
            certificate_der=base64.b64decode(answer["certificate"]),
            ca_chain=[base64.b64decode(c) for c in answer.get("ca_chain", [])],
            activation=answer["activation"],
            expires_in=answer.get("expires_in"),
            credential_id=b64url_decode(body["credential"]["rawId"]),
            raw=answer,
        )

    def activate(
        self,
        enrollment_id: str,
        activation: Mapping[str, Any],
        authenticator: SoftAuthenticator,
        **get_overrides: Any,
    ) -> dict:
        """Step 4: sign the activation challenge with the certified key (``POST /enroll/activate``).

        ``get_overrides`` go to ``SoftAuthenticator.get`` (e.g. ``sign_with=other_key``,
        ``credential_id=...``) to show that only the certified key activates.
        """
        credential = authenticator.get(dict(activation), **get_overrides)
        return self.call("/enroll/activate", {"enrollment_id": enrollment_id, "credential": credential})

    def enroll(
        self,
        card: TestCard,
        *,
        authenticator: SoftAuthenticator | None = None,
        jpki_chain: Sequence[bytes | x509.Certificate] = (),
        tamper: Mapping[str, Any] | None = None,
        activate: bool = True,
    ) -> Enrolled:
        """Steps 1–4 in one go; ``activate=False`` stops with the certificate pending."""
        authenticator = authenticator or self.new_authenticator()
        start = self.begin()
        finished = self.finish(start, card, authenticator, jpki_chain=jpki_chain, tamper=tamper)
        serial = None
        if activate:
            answer = self.activate(
                finished.enrollment_id,
                finished.activation_options,
                authenticator,
                credential_id=finished.credential_id,
            )
            serial = answer.get("serial")
        return Enrolled(
            enrollment_id=finished.enrollment_id,
            serial=serial,
            certificate_der=finished.certificate_der,
            ca_chain=finished.ca_chain,
            authenticator=authenticator,
            credential_id=finished.credential_id,
            finish_response=finished.raw,
        )

    # login (PROTOCOL.md §4) ----------------------------------------------------------
    def login_options(self, txn: str) -> dict:
        """Step 3: what the phone shows before signing (``publicKey`` and ``rp``)."""
        answer = self.call("/login/options", {"txn": txn})
        self.last_login_options = answer
        return answer

    def login_assertion(self, txn: str, credential: Mapping[str, Any]) -> dict:
        """Step 4: send the assertion; returns ``{"status": "authenticated", "next": ...}``."""
        return self.call("/login/assertion", {"txn": txn, "credential": dict(credential)})

    def login(
        self,
        txn: str,
        *,
        authenticator: SoftAuthenticator | Enrolled,
        credential_id: bytes | None = None,
        **overrides: Any,
    ) -> dict:
        """Answer a login transaction: options → ``navigator.credentials.get`` → assertion.

        ``authenticator`` may be an :class:`Enrolled` (its credential is then used);
        ``overrides`` go to ``SoftAuthenticator.get`` (origin, counter, uv, sign_with, ...).
        The options are kept in ``last_login_options`` so tests can check the ``rp`` block.
        """
        if isinstance(authenticator, Enrolled):
            credential_id = credential_id or authenticator.credential_id
            authenticator = authenticator.authenticator
        options = self.login_options(txn)
        credential = authenticator.get(options["publicKey"], credential_id=credential_id, **overrides)
        return self.login_assertion(txn, credential)
