"""Checking a device-key assertion against its certificate: the one gate to every login.

Shared by activation (PROTOCOL §3 step 4) and login (§4 step 4). Beyond the WebAuthn
checks (:mod:`idp.device.webauthn`), the certificate must be in the right state and
unexpired, the credential must not be locked, and the outcome is recorded:
- a sign-counter regression means a cloned key (WebAuthn L3 §6.1.1): the login is refused,
  the certificate suspended (certificateHold) and the event audited; only a fresh JPKI
  proof re-activates it;
- consecutive failures lock the credential for a growing period (PROTOCOL §6), capped
  at a day, with the time it ends in the error. Failures are counted per credential *and*
  client address (behind ``IDP_PROXY_HOPS`` the forwarded one): credential IDs are not
  secrets, so whoever knows one can lock it only for their own address, never for its
  owner elsewhere (PROTOCOL §7.6). Guessing from one place is still stopped.
Those side effects are committed even though the request fails (``commit_despite_error``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import g, request
from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from idp import audit
from idp.ca.lifecycle import suspend
from idp.context import services
from idp.device import webauthn
from idp.errors import InvalidRequest, Locked, ProtocolError
from idp.oidc.session import current_db
from idp.storage.models import Account, Consent, CredentialLockout, DeviceCertificate, utcnow
from idp.web.base64 import b64url_decode

FAILURES_BEFORE_LOCK = 5
FIRST_LOCK = timedelta(minutes=1)
MAX_LOCK = timedelta(hours=24)


class AssertionRefused(ProtocolError):
    error = "invalid_assertion"


def lock_period(lock_count: int) -> timedelta:
    """1, 4, 16, 64… minutes, never more than a day (the exponent is capped: an attacker
    can make ``lock_count`` grow without bound and timedelta overflows past 4**20 minutes)."""
    return min(FIRST_LOCK * (4 ** min(max(lock_count, 0), 8)), MAX_LOCK)


@dataclass
class FoundDevice:
    """A credential's device certificate, its account, this address's failure count for it
    and, at a login, the account's consent for the asking client (read together in one
    statement: every assertion needs them)."""

    device: DeviceCertificate
    account: Account
    failed_attempts: int | None  # None: no failure from this address since the last success
    locked_until: datetime | None
    consent: Consent | None = None


def find_device(credential: Any, *, failure_event: str = "login.failure",
                client_id: str | None = None) -> FoundDevice:
    if not isinstance(credential, Mapping):
        raise InvalidRequest("credential must be a PublicKeyCredential object")
    try:
        credential_id = webauthn.credential_id_from(credential)
    except webauthn.WebAuthnError as exc:
        raise InvalidRequest(exc.description) from None
    found = current_db().execute(_DEVICE_BY_CREDENTIAL, {
        "credential_id": credential_id, "address": client_address_key(), "client_id": client_id}).first()
    if found is None:
        audit.record(current_db(), failure_event, reason="unknown_credential")
        g.commit_despite_error = True
        raise AssertionRefused("unknown credential", error="unknown_credential")
    return FoundDevice(*found)


_LOCKOUT = CredentialLockout.__table__.c
_DEVICE_BY_CREDENTIAL = (
    select(DeviceCertificate, Account, _LOCKOUT.failed_attempts, _LOCKOUT.locked_until, Consent)
    .join(Account, Account.id == DeviceCertificate.account_id)
    .outerjoin(CredentialLockout, and_(_LOCKOUT.device_serial == DeviceCertificate.serial,
                                       _LOCKOUT.address == bindparam("address")))
    .outerjoin(Consent, and_(Consent.account_id == DeviceCertificate.account_id,
                             Consent.client_id == bindparam("client_id")))
    .where(DeviceCertificate.credential_id == bindparam("credential_id"))
    .with_for_update(of=DeviceCertificate))


def verify_device_assertion(found: FoundDevice, credential: Mapping[str, Any], *, challenge: bytes,
                            expected_state: str, event: str,
                            failure_event: str = "login.failure") -> webauthn.VerifiedAssertion:
    """Verify, update the counter and audit; raise a protocol error when refused.

    Success records ``event``; every refusal records ``failure_event`` (with the reason),
    committed although the request fails.
    """
    now = utcnow()
    device, locked_until = found.device, found.locked_until
    if locked_until is not None and locked_until > now:
        until = locked_until.isoformat().replace("+00:00", "Z")
        _refused(device, failure_event, "credential_locked")
        g.commit_despite_error = True
        raise Locked(f"this credential is locked after repeated failures until {until}",
                     headers={"Retry-After": str(int((locked_until - now).total_seconds()) + 1)})
    try:
        _check_state(device, expected_state)
    except AssertionRefused as exc:
        _refused(device, failure_event, exc.error)
        g.commit_despite_error = True
        raise
    settings = services().settings
    try:
        result = webauthn.verify_assertion(
            credential=credential, expected_challenge=challenge, expected_origins=settings.webauthn_origins,
            expected_rp_id=settings.rp_id, credential_public_key_cose=device.public_key_cose,
            current_sign_count=device.sign_count, require_user_verification=True)
        _check_user_handle(device, credential)
    except webauthn.WebAuthnError as exc:
        if exc.code == "counter_regression":
            _refused(device, failure_event, exc.code)
            _suspend_clone(device)
            g.commit_despite_error = True
            raise AssertionRefused("the signature counter went backwards: this key may be cloned; "
                                   "the certificate is suspended until the person proves again",
                                   error="counter_regression") from None
        _count_failure(device, exc.code, failure_event)
        g.commit_despite_error = True
        raise AssertionRefused(exc.description, error=exc.code) from None
    if result.backup_eligible != device.backup_eligible:
        # WebAuthn L3 §6.1.3: the BE flag is fixed when the credential is created. A change
        # means another authenticator (or a synced copy) answers for this credential.
        _refused(device, failure_event, "backup_eligibility_changed")
        g.commit_despite_error = True
        raise AssertionRefused("the authenticator's backup eligibility differs from when this device was "
                               "enrolled; this credential cannot be used, enrol the device again",
                               error="backup_eligibility_changed")
    device.sign_count = result.new_sign_count
    device.last_used_at = now
    if found.failed_attempts is not None:  # a success clears this address's failure count
        current_db().execute(delete(CredentialLockout).where(*_this_address(device)))
    audit.record(current_db(), event, serial=device.serial, account=device.account_id)
    return result


def _refused(device: DeviceCertificate, failure_event: str, reason: str) -> None:
    """Audit a refused assertion, to be kept although the request fails.

    ``g.commit_despite_error`` is set only once every side effect of the refusal is in
    place, just before the refusal is raised: should recording crash, the request's
    transaction rolls back whole (a state change never commits without its entry).
    """
    audit.record(current_db(), failure_event, serial=device.serial, account=device.account_id, reason=reason)


def _check_user_handle(device: DeviceCertificate, credential: Mapping[str, Any]) -> None:
    """WebAuthn L3 §7.2 step 6: a returned userHandle must be the one this credential was made for."""
    handle = (credential.get("response") or {}).get("userHandle")
    if handle in (None, ""):
        return
    try:
        value = b64url_decode(handle)
    except ValueError:
        raise webauthn.WebAuthnError("malformed", "userHandle is not base64url") from None
    if not hmac.compare_digest(value, device.user_handle):
        raise webauthn.WebAuthnError("user_handle_mismatch", "userHandle does not belong to this credential")


def _check_state(device: DeviceCertificate, expected_state: str) -> None:
    if device.not_after <= utcnow():
        raise AssertionRefused("the device certificate has expired", error="certificate_expired")
    if device.state == expected_state:
        return
    messages = {
        "pending": ("the device certificate is not activated yet", "certificate_pending"),
        "active": ("the device certificate is already active", "certificate_active"),
        "revoked": ("the device certificate is revoked", "certificate_revoked"),
        "suspended": ("the device certificate is suspended; prove your identity again", "certificate_suspended"),
    }
    text, code = messages.get(device.state, ("the device certificate cannot be used", "certificate_unusable"))
    raise AssertionRefused(text, error=code)


def _suspend_clone(device: DeviceCertificate) -> None:
    suspend(current_db(), device, reason="certificateHold", event="device.clone_suspected")


def client_address_key() -> str:
    """This request's client address (the forwarded one behind ``IDP_PROXY_HOPS`` trusted
    proxies, which ProxyFix has already put in ``remote_addr``), keyed with the deployment
    secret: the lock-out table never holds a person's IP address in clear."""
    address = (request.remote_addr or "unknown").encode("utf-8", "replace")
    return hmac.new(services().secret_key.encode(), b"lockout:" + address, hashlib.sha256).hexdigest()


def _this_address(device: DeviceCertificate) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return CredentialLockout.device_serial == device.serial, CredentialLockout.address == client_address_key()


def _count_failure(device: DeviceCertificate, code: str, failure_event: str) -> None:
    """Count a failed signature from this address; the FAILURES_BEFORE_LOCK-th in a row
    locks the credential for this address for :func:`lock_period` of the number of locks
    so far (1, 4, 16… minutes, ≤ a day). The count is one upsert, so parallel failures
    are all counted."""
    session, now = current_db(), utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = CredentialLockout.__table__
    statement = insert(table).values(device_serial=device.serial, address=client_address_key(), failed_attempts=1,
                                     lock_count=0, locked_until=None, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.device_serial, table.c.address],
        set_={"failed_attempts": table.c.failed_attempts + 1, "updated_at": now})
    attempts, lock_count = session.connection().execute(
        statement.returning(table.c.failed_attempts, table.c.lock_count)).one()
    audit.record(session, failure_event, serial=device.serial, account=device.account_id, reason=code,
                 attempt=attempts)
    if attempts >= FAILURES_BEFORE_LOCK:
        period = lock_period(lock_count)
        until = now + period
        session.execute(update(CredentialLockout).where(*_this_address(device))
                        .values(locked_until=until, lock_count=lock_count + 1, failed_attempts=0))
        audit.record(session, "device.locked", serial=device.serial, account=device.account_id,
                     until=until.isoformat(), minutes=int(period.total_seconds() // 60))
