"""SQLAlchemy 2.0 models: the IdP's whole persistent state.

Privacy rules baked into the schema (APPI, the My Number Act):
- there is no column for the 12-digit individual number, anywhere;
- the JPKI certificate serial is kept only as a keyed digest (``jpki_serial_digest``),
  enough to recognise the same or a linked card, useless to anyone without the key;
- the account's primary key is internal and never leaves the IdP (RPs see pairwise
  ``sub`` values only).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Account(Base):
    """One person, proven with a JPKI signing certificate.

    The verified attributes are those the card certificate carried at the last proof;
    ``attributes_current`` turns false when that card certificate is revoked (moved,
    renamed, deceased) until the person proves again with the new certificate.
    """

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    name: Mapped[str] = mapped_column(String(200))
    name_substitution: Mapped[str] = mapped_column(String(200), default="")
    gender: Mapped[str] = mapped_column(String(1))
    date_of_birth: Mapped[str] = mapped_column(String(9))
    address: Mapped[str] = mapped_column(String(400))
    address_substitution: Mapped[str] = mapped_column(String(400), default="")
    verified_at: Mapped[datetime] = mapped_column()
    attributes_current: Mapped[bool] = mapped_column(Boolean, default=True)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("attributes_current", True)
        super().__init__(**kwargs)

    devices: Mapped[list["DeviceCertificate"]] = relationship(back_populates="account")
    jpki_bindings: Mapped[list["JpkiBinding"]] = relationship(viewonly=True)


class JpkiBinding(Base):
    """A JPKI signing certificate that proved this account (one row per card certificate)."""

    __tablename__ = "jpki_bindings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    jpki_serial_digest: Mapped[str] = mapped_column(String(64), unique=True)
    not_after: Mapped[datetime] = mapped_column()
    verified_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revocation_reason: Mapped[str | None] = mapped_column(String(40), default=None)


class JpkiLink(Base):
    """Operator-imported renewal linkage: card certificate NEW renews OLD (``idp jpki link``)."""

    __tablename__ = "jpki_links"
    new_serial_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    old_serial_digest: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceCertificate(Base):
    """A device key certified by the trust service; states pending → active → revoked/suspended."""

    __tablename__ = "device_certificates"
    serial: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase hex
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    jpki_binding_id: Mapped[int | None] = mapped_column(ForeignKey("jpki_bindings.id"), default=None)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1024), unique=True)
    user_handle: Mapped[bytes] = mapped_column(LargeBinary(64))
    public_key_cose: Mapped[bytes] = mapped_column(LargeBinary(1024))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(12), default="pending")
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_after: Mapped[datetime] = mapped_column()
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revocation_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    backup_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    hardware_attested: Mapped[bool] = mapped_column(Boolean, default=False)
    aaguid: Mapped[str] = mapped_column(String(36), default="")
    model_hint: Mapped[str] = mapped_column(String(120), default="")
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    lock_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    account: Mapped[Account] = relationship(back_populates="devices")


class Enrollment(Base):
    """One enrolment ceremony: begin → finish (pending certificate) → activate."""

    __tablename__ = "enrollments"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    user_handle: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(12), default="begun")
    device_serial: Mapped[str | None] = mapped_column(ForeignKey("device_certificates.serial"), default=None)
    activation_challenge: Mapped[bytes | None] = mapped_column(LargeBinary(64), default=None)
    activation_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # How ``finish`` found the account (a key of idp.enrollment.EXPLANATIONS), kept so a
    # retried finish answers exactly as the first one did.
    proof_route: Mapped[str | None] = mapped_column(String(16), default=None)


class Client(Base):
    """A registered relying party (OIDC Dynamic Client Registration 1.0 §2)."""

    __tablename__ = "clients"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    client_id_issued_at: Mapped[int] = mapped_column(BigInteger)
    rp_category: Mapped[str] = mapped_column(String(16))
    sector_identifier: Mapped[str] = mapped_column(String(255))
    registration_access_token_hash: Mapped[str] = mapped_column(String(64))
    client_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Incremented by every change (below): a process that keeps a client checks it in the
    # statement that relies on it (idp/clients/cache.py).
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


@event.listens_for(Client, "before_update")
def _next_revision(mapper: Any, connection: Any, client: Client) -> None:
    client.revision = (client.revision or 0) + 1


class InitialAccessToken(Base):
    """An operator-minted initial access token (RFC 7591 §3) that registers clients of one category.

    Stored as a digest only; ``uses_left`` (None: unlimited) is decremented by one conditional
    UPDATE, so two registrations racing for the last use cannot both win.
    """

    __tablename__ = "initial_access_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rp_category: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    uses_left: Mapped[int | None] = mapped_column(Integer, default=None)


class AuthorizationTransaction(Base):
    """A pending authorization request, from ``/authorize`` to the redirect back to the RP.

    ``browser_binding`` is a digest of a secret kept in the opening browser's cookie:
    only that browser may take the session a (possibly cross-device) login creates.
    """

    __tablename__ = "authorization_transactions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    browser_binding: Mapped[str] = mapped_column(String(64))
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    confirmation_code: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="pending")
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), default=None)
    device_serial: Mapped[str | None] = mapped_column(String(42), default=None)
    auth_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    amr: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    acr: Mapped[str | None] = mapped_column(String(64), default=None)
    failure: Mapped[str | None] = mapped_column(String(64), default=None)
    session_started: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the wallet page for this sign-in was first opened (the QR code was scanned), so the
    # computer can show "opened on your phone" before the approval arrives.
    phone_opened_at: Mapped[datetime | None] = mapped_column(default=None)
    # The authorization code the transaction ended in (RFC 6749 §4.1.2), as a digest, written by
    # the compare-and-set that completes it; what the token request must match is the stored
    # request itself (idp/oidc/codes.py). ``code_session_id`` is the per-client ``sid``.
    code_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True, unique=True)
    code_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    code_used_at: Mapped[datetime | None] = mapped_column(default=None)
    code_session_id: Mapped[str | None] = mapped_column(String(64), default=None)


class BrowserSession(Base):
    """The IdP's own login session (cookie) that lets ``prompt=none`` succeed silently."""

    __tablename__ = "browser_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # digest of the cookie value
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    device_serial: Mapped[str] = mapped_column(String(42))
    auth_time: Mapped[int] = mapped_column(BigInteger)
    amr: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set for a session approved on another device (a phone scanning the QR code): it may
    # finish only this authorization transaction (OAuth Cross-Device Flows Security BCP).
    scope_txn: Mapped[str | None] = mapped_column(String(64), default=None)


class Token(Base):
    """Access and refresh tokens, stored as digests only (a database leak yields no bearer token).

    A token family is every token descending from one authorization code (``code_hash``,
    kept through refresh rotation); ``device_serial`` names the device certificate whose
    login the family came from, so revoking the certificate ends the family.
    """

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    session_id: Mapped[str | None] = mapped_column(String(64), default=None)
    device_serial: Mapped[str | None] = mapped_column(String(42), index=True, default=None)
    auth_time: Mapped[int] = mapped_column(BigInteger)
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    issued_at: Mapped[int] = mapped_column(BigInteger)
    expires_in: Mapped[int] = mapped_column(Integer)
    refresh_expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # RFC 9449 §6: the access token (and a public client's refresh token, §5) is bound to this key
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), default=None)


class Consent(Base):
    """What a person allowed one RP to receive, for which purpose, under which policy version."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("account_id", "client_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    claims: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(Text, default="")
    policy_version: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(default=None)


class Disclosure(Base):
    """What was actually released to whom and when (shown on the account page)."""

    __tablename__ = "disclosures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    claims: Mapped[list[str]] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(16))  # id_token | userinfo
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Append-only, hash-chained audit record: each entry commits to the previous one of its chain."""

    __tablename__ = "audit_log"
    chain: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=0,
                                       server_default="0")
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    event: Mapped[str] = mapped_column(String(48))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """Where a chain continues after its older entries were archived (``idp audit archive``)."""

    __tablename__ = "audit_checkpoints"
    chain: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))
    archived_at: Mapped[datetime] = mapped_column()


class SigningKey(Base):
    """An ID-token signing key on the deployment's schedule, shared by every instance (idp/keystore.py).

    ``sealed`` is the private JWK as a JWE (RFC 7516) under the wrapping key every
    instance derives from its copy of the keys folder (file backend); it is NULL when the
    private half is an object in the PKCS#11 token, which never leaves it.
    """

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(100), primary_key=True)
    alg: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[int] = mapped_column(BigInteger)
    use_after: Mapped[int] = mapped_column(BigInteger)
    retire_after: Mapped[int | None] = mapped_column(BigInteger, default=None)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed: Mapped[str | None] = mapped_column(Text, default=None)


class SigningKeySchedule(Base):
    """One row: the schedule's version, raised by every change, so an instance learns of a
    rotation made anywhere by reading one integer by primary key."""

    __tablename__ = "signing_key_schedule"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class CrlState(Base):
    """The trust service's current CRL, regenerated on change and before nextUpdate."""

    __tablename__ = "crl_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crl_number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime] = mapped_column()
    next_update: Mapped[datetime] = mapped_column()
    der: Mapped[bytes] = mapped_column(LargeBinary)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)


class ParRequest(Base):
    """A pushed authorization request (RFC 9126 §2.2): single use, short-lived."""

    __tablename__ = "par_requests"
    request_uri_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column()
    used: Mapped[bool] = mapped_column(Boolean, default=False)



class SeenOnce(Base):
    """One-time values (client assertion ``jti``s, used challenges) until they could no longer be replayed."""

    __tablename__ = "seen_once"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class CredentialLockout(Base):
    """Failed assertions of one credential from one client address (PROTOCOL §6, §7.6).

    Counting per credential *and* address keeps the lock where the guessing happens:
    whoever merely knows a credential ID cannot lock its owner out from elsewhere.
    """

    __tablename__ = "credential_lockouts"
    device_serial: Mapped[str] = mapped_column(ForeignKey("device_certificates.serial"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)  # digest of the client address
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    lock_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionClient(Base):
    """Which RPs a browser session signed in to, for logout notifications (Back-Channel Logout §2.7)."""

    __tablename__ = "session_clients"
    session_id: Mapped[str] = mapped_column(ForeignKey("browser_sessions.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
