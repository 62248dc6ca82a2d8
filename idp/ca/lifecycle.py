"""Device certificate lifecycle in storage: issue (pending) → activate → revoke / suspend.

Every step runs inside the caller's transaction together with its audit entry, and
marks the CRL stale so the next ``/ca/crl`` fetch (or the operator command) re-signs it
(RFC 5280 §5: a full CRL with an increasing cRLNumber). OCSP answers straight from the
database, so a revocation is visible at once on every instance.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import audit
from idp.ca import crl as crl_mod
from idp.ca.authority import CertificateAuthority
from idp.ca.ocsp import UNKNOWN, CertStatus
from idp.ca.profile import issue_device_certificate, new_serial_number
from idp.device.webauthn import RegisteredCredential
from idp.oidc.token_family import revoke_tokens
from idp.settings import Settings
from idp.storage.models import CredentialLockout, CrlState, DeviceCertificate, utcnow

DEVICE_CERTIFICATE_MAX_LIFETIME = timedelta(days=3 * 365)
CRL_LIFETIME = timedelta(hours=24)
CRL_REFRESH_BEFORE = timedelta(hours=6)
SUSPENDED = "suspended"


class LifecycleError(ValueError):
    """An operator or person asked for a transition that cannot happen (nothing changed)."""


def serial_hex(serial_number: int) -> str:
    return format(serial_number, "x")


def issue(session: Session, *, ca: CertificateAuthority, settings: Settings, account_id: str,
          credential: RegisteredCredential, user_handle: bytes, jpki_not_after: datetime,
          jpki_binding_id: int | None) -> DeviceCertificate:
    """Certify the device key, never beyond the JPKI certificate that proved the person."""
    now = utcnow()
    serial = new_serial_number()
    not_after = min(jpki_not_after, now + DEVICE_CERTIFICATE_MAX_LIFETIME)
    certificate = issue_device_certificate(
        ca, public_key=credential.public_key, serial_number=serial, account_ref=account_id,
        not_before=now, not_after=not_after, crl_url=settings.url("/ca/crl"),
        ocsp_url=settings.url("/ca/ocsp"), ca_issuers_url=settings.url("/ca/certificate"),
        hardware_attested=credential.key_protection == "hardware")
    device = DeviceCertificate(
        serial=serial_hex(serial), account_id=account_id, jpki_binding_id=jpki_binding_id,
        credential_id=credential.credential_id, user_handle=user_handle,
        public_key_cose=credential.public_key_cose, certificate_der=certificate.public_bytes(Encoding.DER),
        state="pending", issued_at=now, not_after=certificate.not_valid_after_utc,
        sign_count=credential.sign_count, backup_eligible=credential.backup_eligible,
        hardware_attested=credential.key_protection == "hardware", aaguid=credential.aaguid)
    session.add(device)
    session.flush()
    audit.record(session, "certificate.issued", serial=device.serial, account=account_id,
                 hardware_attested=device.hardware_attested)
    return device


def activate(session: Session, device: DeviceCertificate) -> None:
    """pending → active, after the certified key signed the activation challenge."""
    if device.state != "pending":
        raise LifecycleError(f"certificate {device.serial} is {device.state}, not pending")
    device.state = "active"
    device.activated_at = utcnow()
    audit.record(session, "certificate.activated", serial=device.serial, account=device.account_id)
    _crl_stale(session)


def find(session: Session, serial: str) -> DeviceCertificate:
    """The device certificate with hex ``serial`` (``0x``, colons and leading zeros allowed), locked."""
    text = serial.strip().lower().removeprefix("0x").replace(":", "")
    if not text or len(text) > 42 or any(ch not in "0123456789abcdef" for ch in text):
        raise LifecycleError(f"{serial!r} is not a hexadecimal serial number")
    device = session.get(DeviceCertificate, text.lstrip("0") or "0", with_for_update=True)
    if device is None:
        raise LifecycleError(f"no device certificate with serial {text}")
    return device


def revoke(session: Session, device: DeviceCertificate, *, reason: str, by: str) -> None:
    """Revoke ``device`` for an RFC 5280 reason; ``certificateHold`` suspends instead.

    A suspended certificate may still be revoked for good (its CRL entry then carries the
    new reason). Refused, with nothing changed: an unknown reason, an already revoked
    certificate, or a hold on a certificate already on hold.
    """
    try:
        reason = crl_mod.parse_reason(reason).value
    except ValueError as exc:  # names the accepted reasons
        raise LifecycleError(str(exc)) from None
    if device.state == "revoked":
        raise LifecycleError(f"certificate {device.serial} is already revoked ({device.revocation_reason})")
    if reason == "certificateHold":
        if device.state == SUSPENDED:
            raise LifecycleError(f"certificate {device.serial} is already suspended (certificateHold)")
        suspend(session, device, reason=reason, event="certificate.suspended", by=by)
        return
    device.state = "revoked"
    device.revoked_at = utcnow()
    device.revocation_reason = reason
    revoke_tokens(session, device_serial=device.serial)
    audit.record(session, "certificate.revoked", serial=device.serial, account=device.account_id,
                 reason=reason, by=by)
    _crl_stale(session)


def suspend(session: Session, device: DeviceCertificate, *, reason: str = "certificateHold", event: str,
            by: str = "system") -> bool:
    """certificateHold (RFC 5280 §5.3.1): reversible, but only by a fresh proof of identity.

    Returns False (and changes nothing) when the certificate is already revoked or suspended.
    """
    if device.state in ("revoked", SUSPENDED):
        return False
    device.state = SUSPENDED
    device.revoked_at = utcnow()
    device.revocation_reason = reason
    revoke_tokens(session, device_serial=device.serial)  # lifting a hold does not bring old tokens back
    audit.record(session, event, serial=device.serial, account=device.account_id, reason=reason, by=by)
    _crl_stale(session)
    return True


def reinstate(session: Session, device: DeviceCertificate, *, by: str) -> None:
    """Lift a hold after a fresh JPKI proof: the certificate leaves the CRL (RFC 5280 §5.3.1
    allows a held certificate to be released) and OCSP answers ``good`` again.

    A certificate held before it was ever activated returns to ``pending``: only its own
    key's activation signature makes it active. The stored signature counter restarts, so
    whichever copy of a cloned key signs next is accepted once and a later regression of
    the other copy suspends it again.
    """
    if device.state != SUSPENDED:
        raise LifecycleError(f"certificate {device.serial} is {device.state}, not suspended")
    device.state = "active" if device.activated_at is not None else "pending"
    device.revoked_at = None
    device.revocation_reason = None
    device.sign_count = 0
    session.execute(delete(CredentialLockout).where(CredentialLockout.device_serial == device.serial))
    audit.record(session, "certificate.reinstated", serial=device.serial, account=device.account_id, by=by)
    _crl_stale(session)


def _crl_stale(session: Session) -> None:
    """Mark the CRL for re-signing. A plain UPDATE (not an ORM attribute set, which is skipped
    when the loaded value already reads True) so it always reaches the database and, on
    PostgreSQL, waits for a CRL being re-signed concurrently instead of being lost under it."""
    session.execute(update(CrlState).where(CrlState.id == 1).values(dirty=True))


def _fresh(state: CrlState | None, now: datetime) -> bool:
    return state is not None and not state.dirty and state.next_update - now > CRL_REFRESH_BEFORE


def current_crl(session: Session, ca: CertificateAuthority) -> bytes:
    """The CRL, re-signed when something changed or nextUpdate draws near.

    Re-signing first takes the CRL row's lock (PostgreSQL row lock; the write lock on
    SQLite), then reads the revocations, so two instances never publish different CRLs
    under one cRLNumber and no revocation committed meanwhile is lost (its ``dirty`` mark
    waits for the lock and triggers the next re-signing).
    """
    now = utcnow()
    state = session.get(CrlState, 1, populate_existing=True)
    if _fresh(state, now):
        return state.der
    if state is None:
        state = _create_crl_state(session, ca, now)
    session.execute(update(CrlState).where(CrlState.id == 1).values(dirty=CrlState.dirty))  # lock
    session.refresh(state)
    if _fresh(state, now):
        return state.der
    revoked = session.scalars(select(DeviceCertificate).where(
        DeviceCertificate.state.in_(("revoked", SUSPENDED))).order_by(DeviceCertificate.revoked_at)).all()
    entries = [crl_mod.RevokedEntry(int(d.serial, 16), d.revoked_at or now, d.revocation_reason)
               for d in revoked]
    number = state.crl_number + 1
    der = crl_mod.build_crl(ca, revoked=entries, crl_number=number, this_update=now,
                            next_update=now + CRL_LIFETIME)
    state.crl_number, state.this_update, state.next_update = number, now, now + CRL_LIFETIME
    state.der, state.dirty = der, False
    session.flush()
    return der


def _create_crl_state(session: Session, ca: CertificateAuthority, now: datetime) -> CrlState:
    """The CRL row, created (dirty, cRLNumber 0 so the first CRL is number 1) on first use."""
    try:
        with session.begin_nested():
            session.add(CrlState(id=1, crl_number=0, this_update=now, next_update=now, der=b"", dirty=True))
    except IntegrityError:  # another instance created it first
        pass
    state = session.get(CrlState, 1, populate_existing=True)
    assert state is not None
    return state


def ocsp_status(session: Session, serial_number: int) -> CertStatus:
    """RFC 6960 §2.2: pending (never activated) and unknown serials are not ``good``."""
    device = session.get(DeviceCertificate, serial_hex(serial_number))
    if device is None or device.state == "pending":
        return UNKNOWN
    if device.state in ("revoked", SUSPENDED):
        return CertStatus("revoked", device.revoked_at or utcnow(), device.revocation_reason)
    return CertStatus("good")

