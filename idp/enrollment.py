"""Enrolment with the trust service (PROTOCOL §3): begin → finish (pending) → activate.

``finish`` binds three things with one card signature: the person (JPKI signing
certificate, verified to ``IDP_JPKI_TRUST_ANCHORS``), this server challenge and this
device key (SHA-256 of its SPKI). Only then is the device key certified, and only as
``pending``: ``activate`` requires a signature by that very key over a fresh challenge
within the activation window, so a certificate is never usable by someone who merely
relayed the enrolment.

The same person is recognised by a keyed digest of the card certificate's issuer and
serial (never the serial itself, never the individual number). A renewed card joins its
account through a device-key co-signature or an operator's linkage import (``idp jpki
link``); otherwise a new account is created and the person is told why.

Recovery without another device: a person who lost their phone enrols a new one with the
card (a fresh JPKI signature, as always) and asks, when activating it, to stop every other
device of the account (``"revoke_other_devices": true``). The account and so every pairwise
``sub`` stay the same; the lost phone's certificate is revoked (keyCompromise, RFC 5280
§5.3.1) and its sessions end.
"""

from __future__ import annotations

import base64
import math
import secrets
from datetime import timedelta
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select, update

from idp import audit
from idp.ca import lifecycle
from idp.context import services
from idp.device import webauthn
from idp.device.assertions import find_device, verify_device_assertion
from idp.errors import InvalidRequest, NotFound, ProtocolError
from idp.oidc.session import current_db
from idp.ops import metrics
from idp.proofing.jpki import JpkiError, VerifiedJpki, binding_message, verify_binding_signature
from idp.privacy import contains_individual_number
from idp.proofing.linkage import serial_digest
from idp.storage.models import (
    Account,
    BrowserSession,
    DeviceCertificate,
    Enrollment,
    JpkiBinding,
    JpkiLink,
    utcnow,
)
from idp.storage.single_use import compare_and_set
from idp.web.base64 import b64_decode, json_body, string_field

ENROLLMENT_LIFETIME = timedelta(seconds=300)
ACTIVATION_LIFETIME = timedelta(seconds=600)
MAX_CHAIN = 4
BINARY_MEMBERS = ("credential", "jpki", "renewal")
MODEL_HINT_MAX = 120

bp = Blueprint("enroll", __name__)


class EnrollmentRefused(ProtocolError):
    error = "enrollment_refused"


@bp.post("/enroll/begin")
def begin() -> ResponseReturnValue:
    settings = services().settings
    enrollment = Enrollment(id=secrets.token_urlsafe(24), challenge=secrets.token_bytes(32),
                            user_handle=secrets.token_bytes(32), expires_at=utcnow() + ENROLLMENT_LIFETIME)
    current_db().add(enrollment)
    options = webauthn.creation_options(
        rp_id=settings.rp_id, rp_name="JP Digital ID", user_handle=enrollment.user_handle,
        user_name=f"device-{enrollment.id[:8]}", user_display_name="JP Digital ID",
        challenge=enrollment.challenge)
    return jsonify({"enrollment_id": enrollment.id, "publicKey": options,
                    "expires_in": int(ENROLLMENT_LIFETIME.total_seconds())})


def _open_enrollment(body: dict[str, Any], *states: str) -> Enrollment:
    enrollment_id = string_field(body, "enrollment_id", max_length=64)
    enrollment = current_db().get(Enrollment, enrollment_id)
    if enrollment is None:
        raise NotFound("unknown enrollment_id", error="invalid_request")
    if enrollment.state not in states:
        raise InvalidRequest(f"this enrolment is {enrollment.state}, not {states[0]}")
    return enrollment


def _claim(enrollment: Enrollment, expected: str, new: str) -> None:
    """expected → new in one compare-and-set: of concurrent requests for one enrolment step,
    exactly one goes on; the others are refused before any side effect (a duplicated
    activation must never reach the signature counter and flag the phone as a clone)."""
    if not compare_and_set(current_db(), Enrollment, Enrollment.id == enrollment.id, Enrollment.state == expected,
                           state=new):
        raise InvalidRequest(f"this enrolment is no longer {expected}: the step was already taken")


@bp.post("/enroll/finish")
def finish() -> ResponseReturnValue:
    """Certify the device key (pending), once per enrolment; a retry gets the same answer.

    A phone that lost the answer (a dropped connection, a killed app) sends the very same
    request again. The same credential (credential id and public key) proved by the same
    card over this enrolment's challenge then gets the answer of the step that was taken,
    with the same certificate, serial and activation challenge, whether the first request
    committed long before or is still running in another worker: the losing requests of
    the compare-and-set read what the winner committed. Any other credential is refused as
    before, and nothing is issued twice.
    """
    svc = services()
    body = json_body()
    if contains_individual_number({k: v for k, v in body.items() if k not in BINARY_MEMBERS}):
        raise InvalidRequest("an individual number is never accepted here")
    enrollment = _open_enrollment(body, "begun", "finished")
    if enrollment.state == "begun" and enrollment.expires_at <= utcnow():
        raise InvalidRequest("the enrolment challenge has expired; begin again", error="expired")
    credential = body.get("credential")
    jpki = body.get("jpki")
    if not isinstance(credential, dict) or not isinstance(jpki, dict):
        raise InvalidRequest("credential and jpki must be JSON objects")
    try:
        registered = webauthn.verify_registration(
            credential=credential, expected_challenge=enrollment.challenge,
            expected_origins=svc.settings.webauthn_origins, expected_rp_id=svc.settings.rp_id,
            allow_synced=svc.settings.allow_synced_keys, attestation_trust=svc.attestation)
    except webauthn.WebAuthnError as exc:
        raise EnrollmentRefused(exc.description, error=exc.code) from None
    verified = _verify_jpki(jpki, enrollment.challenge, registered.spki_der)
    if enrollment.state != "begun" or not compare_and_set(
            current_db(), Enrollment, Enrollment.id == enrollment.id, Enrollment.state == "begun", state="finished"):
        device, how = _finished_before(enrollment, registered, verified)
        metrics.step_repeated()
        return _finish_answer(enrollment, device, registered, how)
    session = current_db()
    if session.scalars(select(DeviceCertificate.serial).where(
            DeviceCertificate.credential_id == registered.credential_id)).first():
        raise EnrollmentRefused("this device key is already enrolled", error="already_enrolled")
    try:
        account, binding, how = _account_for(verified, body.get("renewal"), enrollment.challenge)
    except ProtocolError:
        # A refused renewal co-signature is committed for its failure count: the enrolment
        # must stay open with it, never "finished" without a certificate.
        enrollment.state = "begun"
        raise
    device = lifecycle.issue(session, ca=svc.ca, settings=svc.settings, account_id=account.id,
                             credential=registered, user_handle=enrollment.user_handle,
                             jpki_not_after=verified.not_after, jpki_binding_id=binding.id)
    device.model_hint = _model_hint(body.get("model_hint"))
    enrollment.device_serial = device.serial
    enrollment.proof_route = how
    enrollment.activation_challenge = secrets.token_bytes(32)
    enrollment.activation_expires_at = utcnow() + ACTIVATION_LIFETIME
    return _finish_answer(enrollment, device, registered, how)


def _finished_before(enrollment: Enrollment, registered: webauthn.RegisteredCredential,
                     verified: VerifiedJpki) -> tuple[DeviceCertificate, str]:
    """The pending certificate an earlier request of this enrolment issued for this very
    credential and card, and how it found the account; or the usual refusal of a step
    already taken."""
    session = current_db()
    session.refresh(enrollment)  # what the request that took the step committed
    device = session.get(DeviceCertificate, enrollment.device_serial) if enrollment.device_serial else None
    how = enrollment.proof_route
    if device is None or how is None or enrollment.state != "finished" \
            or not _same_proof(device, registered, verified):
        raise InvalidRequest("this enrolment is no longer begun: the step was already taken")
    if device.state != "pending" or enrollment.activation_expires_at is None \
            or enrollment.activation_expires_at <= utcnow():
        raise InvalidRequest("the activation window has closed; this certificate can never be activated",
                             error="expired")
    return device, how


def _same_proof(device: DeviceCertificate, registered: webauthn.RegisteredCredential,
                verified: VerifiedJpki) -> bool:
    """The same device key (credential id and public key) certified for the same card."""
    binding = current_db().get(JpkiBinding, device.jpki_binding_id) if device.jpki_binding_id else None
    return (binding is not None and device.credential_id == registered.credential_id
            and device.public_key_cose == registered.public_key_cose
            and binding.jpki_serial_digest == serial_digest(services().jpki_link_key, verified.serial_number))


def _finish_answer(enrollment: Enrollment, device: DeviceCertificate,
                   registered: webauthn.RegisteredCredential, how: str) -> ResponseReturnValue:
    """``201`` with the pending certificate and its activation challenge. ``expires_in``
    counts down to the one activation deadline: a retry never extends the window."""
    svc = services()
    challenge, deadline = enrollment.activation_challenge, enrollment.activation_expires_at
    if challenge is None or deadline is None:  # set together with the certificate, never apart
        raise InvalidRequest("this enrolment has no activation challenge")
    options = webauthn.request_options(rp_id=svc.settings.rp_id, challenge=challenge,
                                       allow_credentials=[registered.credential_id])
    remaining = math.ceil((deadline - utcnow()).total_seconds())
    response = jsonify({
        "status": "pending",
        "key_protection": registered.key_protection,
        "certificate": _b64(device.certificate_der),
        "ca_chain": [_b64(svc.ca.certificate_der)],
        "activation": {"publicKey": options},
        "expires_in": min(remaining, int(ACTIVATION_LIFETIME.total_seconds())),
        "account_status": "new" if how == "new" else "existing",
        "explanation": EXPLANATIONS[how],
    })
    response.status_code = 201
    return response


def _model_hint(value: Any) -> str:
    """What the wallet app says the phone is ("Pixel 9"), for the person's device list only."""
    if not isinstance(value, str):
        return ""
    printable = "".join(ch for ch in value if ch.isprintable())
    return printable.strip()[:MODEL_HINT_MAX]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _verify_jpki(jpki: dict[str, Any], challenge: bytes, spki_der: bytes) -> VerifiedJpki:
    certificate = b64_decode(jpki.get("certificate"), "jpki.certificate")
    chain = jpki.get("chain", [])
    if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
        raise InvalidRequest(f"jpki.chain must be a list of at most {MAX_CHAIN} certificates")
    chain_der = [b64_decode(item, "jpki.chain[]") for item in chain]
    signature = b64_decode(jpki.get("signature"), "jpki.signature", max_bytes=1024)
    trust = services().jpki
    trust.refresh_crls_if_changed(services().settings.jpki_crls)
    try:
        verified = trust.verify(certificate, chain_der)
        verify_binding_signature(verified, binding_message(challenge, spki_der), signature)
    except JpkiError as exc:
        raise EnrollmentRefused(f"JPKI: {exc.description}", error=f"jpki_{exc.code}") from None
    return verified


EXPLANATIONS = {
    "same_card": "This card certificate already proved your account: the new device was added to it.",
    "device_signature": "Your renewed card certificate joined your account because one of the account's "
                        "active devices also signed this enrolment.",
    "linkage": "Your renewed card certificate joined your account through the card issuer's renewal record.",
    "new": "A new account was created: this card certificate has not proved an account before, and it was "
           "neither signed together with an active device of an existing account nor recorded as the renewal "
           "of an earlier card. If you already have an account with an older card, enrol again signing with a "
           "device of that account, or ask the operator to import the renewal record; accounts are never "
           "merged silently.",
}
"""What ``/enroll/finish`` tells the person about the account it used (``explanation``)."""
MAX_LINK_CHAIN = 16


def _account_for(verified: VerifiedJpki, renewal: Any, challenge: bytes) -> tuple[Account, JpkiBinding, str]:
    """The person's account: same card, a linked renewal, a co-signed renewal, or a new one.

    Returns (account, binding, how) with ``how`` a key of :data:`EXPLANATIONS`. A card
    certificate revoked on a JPKI CRL (``idp jpki refresh-crls``) never proves again: the
    refusal is read from the database, so it holds on every instance at once.
    """
    session = current_db()
    digest = serial_digest(services().jpki_link_key, verified.serial_number)
    binding = session.scalars(select(JpkiBinding).where(JpkiBinding.jpki_serial_digest == digest)).first()
    if binding is not None and binding.revoked_at is not None:
        raise EnrollmentRefused(
            f"JPKI: this card certificate was revoked ({binding.revocation_reason}); prove with your "
            "current card certificate", error="jpki_revoked")
    linked = _linked_account(digest) if binding is None else None
    cosigned = _cosigned_account(renewal, challenge)
    account: Account | None = session.get(Account, binding.account_id) if binding else linked
    if account is not None and cosigned is not None and cosigned.id != account.id:
        raise EnrollmentRefused("the device that co-signed belongs to another account than this card certificate",
                                error="account_conflict")
    how = "same_card" if binding else "linkage" if linked else "device_signature" if cosigned else "new"
    account = account or cosigned
    now = utcnow()
    attrs = verified.attributes
    if account is None:
        account = Account(id="acct-" + secrets.token_hex(16), verified_at=now, name="", gender="3",
                          date_of_birth="0", address="")
        session.add(account)
        audit.record(session, "account.created", account=account.id)
    account.name, account.name_substitution = attrs.name, attrs.name_substitution
    account.gender, account.date_of_birth = attrs.gender, attrs.date_of_birth
    account.address, account.address_substitution = attrs.address, attrs.address_substitution
    account.verified_at, account.attributes_current = now, True
    if binding is None:
        binding = JpkiBinding(account_id=account.id, jpki_serial_digest=digest, not_after=verified.not_after)
        session.add(binding)
    binding.verified_at = now
    session.flush()
    audit.record(session, "identity.proven", account=account.id, binding=binding.id, via=how)
    _reinstate_suspended(account)
    return account, binding, how


def _linked_account(digest: str) -> Account | None:
    """The account of the card this one renews, following operator-imported links (``idp jpki link``)
    back through several renewals to the card that proved an account."""
    session = current_db()
    for _ in range(MAX_LINK_CHAIN):
        link = session.get(JpkiLink, digest)
        if link is None:
            return None
        digest = link.old_serial_digest
        old = session.scalars(select(JpkiBinding).where(JpkiBinding.jpki_serial_digest == digest)).first()
        if old is not None:
            return session.get(Account, old.account_id)
    return None


def _cosigned_account(renewal: Any, challenge: bytes) -> Account | None:
    """A renewed card joins the account whose active device key also signed this enrolment's
    challenge (PROTOCOL §3): ``"renewal": {"credential": <assertion over the same challenge>}``."""
    if renewal is None:
        return None
    if not isinstance(renewal, dict) or not isinstance(renewal.get("credential"), dict):
        raise InvalidRequest('renewal must be {"credential": <assertion>}')
    found = find_device(renewal["credential"], failure_event="identity.renewal_refused")
    verify_device_assertion(found, renewal["credential"], challenge=challenge, expected_state="active",
                            event="identity.renewal_cosigned", failure_event="identity.renewal_refused")
    return found.account


def _reinstate_suspended(account: Account) -> None:
    """A fresh JPKI proof lifts clone or card-revocation holds (certificateHold) on this account."""
    for device in account.devices:
        if device.state == lifecycle.SUSPENDED:
            lifecycle.reinstate(current_db(), device, by="jpki-proof")


@bp.post("/enroll/activate")
def activate() -> ResponseReturnValue:
    body = json_body()
    revoke_others = body.get("revoke_other_devices", False)
    if not isinstance(revoke_others, bool):
        raise InvalidRequest("revoke_other_devices must be true or false")
    enrollment = _open_enrollment(body, "finished")
    if enrollment.activation_expires_at is None or enrollment.activation_expires_at <= utcnow():
        raise InvalidRequest("the activation window has closed; this certificate can never be activated",
                             error="expired")
    credential = body.get("credential")
    found = find_device(credential, failure_event="certificate.activation_failed")
    device = found.device
    if device.serial != enrollment.device_serial:
        raise ProtocolError("only the certified key can activate its certificate", error="wrong_key")
    _claim(enrollment, "finished", "activated")
    current_db().refresh(device)  # read again now that this request holds the step
    try:
        verify_device_assertion(found, credential, challenge=enrollment.activation_challenge,
                                expected_state="pending", event="certificate.activation_signed",
                                failure_event="certificate.activation_failed")
    except ProtocolError:
        enrollment.state = "finished"  # a refused signature (its failure count is kept) may be retried
        raise
    lifecycle.activate(current_db(), device)
    answer: dict[str, Any] = {"status": "active", "serial": device.serial}
    if revoke_others:
        answer["revoked_devices"] = _revoke_other_devices(device)
    return jsonify(answer)


def _revoke_other_devices(kept: DeviceCertificate) -> int:
    """Recovery after a lost phone: the person proved again with the card (this enrolment's
    fresh JPKI signature) and activated ``kept`` with its own key, so every other device of the
    account is revoked as possibly in other hands (keyCompromise) and its sessions end."""
    session = current_db()
    others = session.scalars(select(DeviceCertificate).where(
        DeviceCertificate.account_id == kept.account_id, DeviceCertificate.serial != kept.serial,
        DeviceCertificate.state != "revoked").with_for_update()).all()
    for device in others:
        lifecycle.revoke(session, device, reason="keyCompromise", by="card-recovery")
    if others:
        session.execute(update(BrowserSession).where(
            BrowserSession.device_serial.in_([d.serial for d in others]), BrowserSession.ended_at.is_(None))
            .values(ended_at=utcnow()))
    return len(others)

