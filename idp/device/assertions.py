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
from sqlalchemy.orm.attributes import set_committed_value

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
    found = current_db().execute(_DEVICE_BY_CREDENTIAL, {
        "credential_id": credential_id_of(credential), "address": client_address_key(), "client_id": client_id}).first()
    if found is None:
        raise unknown_credential(failure_event)
    return FoundDevice(*found)


def credential_id_of(credential: Any) -> bytes:
    """The credential ID a PublicKeyCredential names (looked up before anything is verified)."""
    if not isinstance(credential, Mapping):
        raise InvalidRequest("credential must be a PublicKeyCredential object")
    try:
        return webauthn.credential_id_from(credential)
    except webauthn.WebAuthnError as exc:
        raise InvalidRequest(exc.description) from None


def unknown_credential(failure_event: str) -> AssertionRefused:
    """Audit an assertion by a credential no certificate has (kept although the request fails)."""
    audit.record(current_db(), failure_event, reason="unknown_credential")
    g.commit_despite_error = True
    return AssertionRefused("unknown credential", error="unknown_credential")


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


class Refusal(Exception):
    """A refused assertion, found without writing anything: ``error`` is what the client is
    told, and :meth:`record` leaves behind what the refusal must (its audit entry, a failure
    counted towards the lock-out, a suspected clone suspended). The login checks first and
    writes only once it holds its transaction (idp.web.login); the other callers record at once."""

    def __init__(self, error: ProtocolError, device: DeviceCertificate | None, reason: str,
                 consequence: str = "audit") -> None:
        super().__init__(error.description)
        self.error, self.device, self.reason, self.consequence = error, device, reason, consequence

    def record(self, failure_event: str) -> None:
        """Write the refusal's side effects, to be committed although the request fails
        (``commit_despite_error`` is set only once they are all in place: should recording
        crash, the request's transaction rolls back whole)."""
        if self.device is None:
            raise unknown_credential(failure_event)
        if self.consequence == "count":
            _count_failure(self.device, self.reason, failure_event)
        else:
            audit.record(current_db(), failure_event, serial=self.device.serial, account=self.device.account_id,
                         reason=self.reason)
            if self.consequence == "suspend":
                suspend(current_db(), self.device, reason="certificateHold", event="device.clone_suspected")
        g.commit_despite_error = True


def check_assertion(found: FoundDevice, credential: Mapping[str, Any], *, challenge: bytes,
                    expected_state: str) -> webauthn.VerifiedAssertion:
    """Every check of an assertion, with no write: the lock-out, the certificate's state and
    validity, the WebAuthn verification (L3 §7.2) with the stored counter, the userHandle and
    the backup eligibility; raises :class:`Refusal`."""
    now = utcnow()
    device, locked_until = found.device, found.locked_until
    if locked_until is not None and locked_until > now:
        until = locked_until.isoformat().replace("+00:00", "Z")
        raise Refusal(Locked(f"this credential is locked after repeated failures until {until}",
                             headers={"Retry-After": str(int((locked_until - now).total_seconds()) + 1)}),
                      device, "credential_locked")
    try:
        _check_state(device, expected_state)
    except AssertionRefused as exc:
        raise Refusal(exc, device, exc.error) from None
    settings = services().settings
    try:
        result = webauthn.verify_assertion(
            credential=credential, expected_challenge=challenge, expected_origins=settings.webauthn_origins,
            expected_rp_id=settings.rp_id, credential_public_key_cose=device.public_key_cose,
            current_sign_count=device.sign_count, require_user_verification=True)
        _check_user_handle(device, credential)
    except webauthn.WebAuthnError as exc:
        if exc.code == "counter_regression":
            raise Refusal(AssertionRefused("the signature counter went backwards: this key may be cloned; "
                                           "the certificate is suspended until the person proves again",
                                           error="counter_regression"), device, exc.code, "suspend") from None
        raise Refusal(AssertionRefused(exc.description, error=exc.code), device, exc.code, "count") from None
    if result.backup_eligible != device.backup_eligible:
        # WebAuthn L3 §6.1.3: the BE flag is fixed when the credential is created. A change
        # means another authenticator (or a synced copy) answers for this credential.
        raise Refusal(AssertionRefused("the authenticator's backup eligibility differs from when this device was "
                                       "enrolled; this credential cannot be used, enrol the device again",
                                       error="backup_eligibility_changed"), device, "backup_eligibility_changed")
    return result


def verify_device_assertion(found: FoundDevice, credential: Mapping[str, Any], *, challenge: bytes,
                            expected_state: str, event: str,
                            failure_event: str = "login.failure") -> webauthn.VerifiedAssertion:
    """Verify, update the counter and audit; raise a protocol error when refused.

    Success records ``event``; every refusal records ``failure_event`` (with the reason),
    committed although the request fails.
    """
    try:
        result = check_assertion(found, credential, challenge=challenge, expected_state=expected_state)
    except Refusal as refusal:
        refusal.record(failure_event)
        raise refusal.error from None
    device = found.device
    device.sign_count = result.new_sign_count
    device.last_used_at = utcnow()
    clear_failures(found)
    audit.record(current_db(), event, serial=device.serial, account=device.account_id)
    return result


def record_use(found: FoundDevice, result: webauthn.VerifiedAssertion, *, now: datetime) -> bool:
    """Write the new counter and last use, the failure count cleared: a compare-and-set on the
    counter and state that were checked, False (nothing written) when either has changed
    since they were read (WebAuthn L3 §6.1.1: a counter is only ever compared with the one
    stored by the previous use)."""
    device = found.device
    written = current_db().connection().execute(_USED, {
        "device": device.serial, "read_count": device.sign_count, "read_state": device.state,
        "new_count": result.new_sign_count, "now": now}).rowcount == 1
    if written:
        set_committed_value(device, "sign_count", result.new_sign_count)
        set_committed_value(device, "last_used_at", now)
        clear_failures(found)
    return written


_DEVICE = DeviceCertificate.__table__.c
_USED = (update(DeviceCertificate.__table__)
         .where(_DEVICE.serial == bindparam("device"), _DEVICE.sign_count == bindparam("read_count"),
                _DEVICE.state == bindparam("read_state"))
         .values(sign_count=bindparam("new_count"), last_used_at=bindparam("now")))


def clear_failures(found: FoundDevice) -> None:
    """A success clears this address's failure count (one statement, only when there is one)."""
    if found.failed_attempts is not None:
        current_db().execute(delete(CredentialLockout).where(*_this_address(found.device)))


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
