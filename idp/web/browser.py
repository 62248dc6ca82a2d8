"""The browser's two cookies: a binding secret and the IdP login session.

- ``idp_browser`` binds authorization transactions to the browser that opened them: a
  cross-device login approved on a phone hands the session only to that browser
  (PROTOCOL §4.5). The database keeps only its digest.
- ``idp_session`` is the single sign-on session that lets ``prompt=none`` succeed
  (OIDC Core §3.1.2.1). It is valid only while its device certificate is active, so a
  revoked phone ends every session it opened at once, on every instance.
Both are HttpOnly, SameSite=Lax, and hold 256-bit random values. With an https issuer they
are Secure and carry the ``__Host-`` prefix (RFC 6265bis §4.1.3.2): a browser accepts them
only from this exact host over https with ``Path=/`` and no ``Domain``, so a sibling
subdomain or a plain-http page cannot plant or overwrite them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, Response, g, request
from sqlalchemy import select

from idp.context import services
from idp.oidc.session import current_db
from idp.storage.models import Account, BrowserSession, DeviceCertificate, utcnow
from idp.storage.rows import insert_row

BINDING_COOKIE = "idp_browser"
SESSION_COOKIE = "idp_session"
HOST_PREFIX = "__Host-"
SESSION_LIFETIME = timedelta(hours=8)


def _secure() -> bool:
    return services().settings.issuer.startswith("https://")


def cookie_name(base: str) -> str:
    """``base`` with the ``__Host-`` prefix when the issuer is https."""
    return HOST_PREFIX + base if _secure() else base


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


def binding_value() -> str:
    value = g.get("binding_value") or request.cookies.get(cookie_name(BINDING_COOKIE))
    if not value or len(value) > 128:
        value = secrets.token_urlsafe(32)
        g.new_binding = value
    g.binding_value = value
    return value


def binding_digest() -> str:
    return _digest(binding_value())


def same_browser(stored_digest: str) -> bool:
    value = request.cookies.get(cookie_name(BINDING_COOKIE))
    return bool(value) and hmac.compare_digest(_digest(value), stored_digest)


@dataclass
class SessionView:
    row: BrowserSession
    account: Account

    @property
    def account_id(self) -> str:
        return self.row.account_id

    @property
    def auth_time(self) -> int:
        return self.row.auth_time

    @property
    def acr(self) -> str:
        return self.row.acr

    @property
    def amr(self) -> list[str]:
        return list(self.row.amr)

    @property
    def device_serial(self) -> str:
        return self.row.device_serial

    def client_sid(self, client_id: str) -> str:
        """A per-client ``sid`` (OIDC Front/Back-Channel Logout §2): RPs cannot link sessions."""
        return client_sid(self.row.sid, client_id)


def client_sid(sid: str, client_id: str) -> str:
    mac = hmac.new(sid.encode(), client_id.encode(), hashlib.sha256).hexdigest()
    return mac[:32]


def current_session(*, for_transaction: str | None = None, scoped: bool = False) -> SessionView | None:
    """The valid session of this browser: one statement joins the session, its account and
    the state of the device certificate that opened it. A session scoped to one transaction
    (approved on another device) counts only for ``for_transaction`` naming that
    transaction, or with ``scoped`` (logout ends it like any other); never for single
    sign-on or the account pages."""
    value = request.cookies.get(cookie_name(SESSION_COOKIE))
    if not value or len(value) > 128:
        return None
    found = current_db().execute(
        select(BrowserSession, Account, DeviceCertificate.state, DeviceCertificate.not_after)
        .join(Account, Account.id == BrowserSession.account_id)
        .join(DeviceCertificate, DeviceCertificate.serial == BrowserSession.device_serial)
        .where(BrowserSession.id == _digest(value))
    ).first()
    if found is None:
        return None
    row, account, device_state, device_not_after = found
    now = utcnow()
    if row.ended_at is not None or row.expires_at <= now or device_state != "active" or device_not_after <= now:
        return None
    if row.scope_txn is not None and not scoped and row.scope_txn != for_transaction:
        return None
    return SessionView(row, account)


def start_session(*, account_id: str, device_serial: str, auth_time: int, amr: list[str], acr: str,
                  scope_txn: str | None = None) -> BrowserSession:
    """A new session; ``scope_txn``: approved on another device, good for that transaction only."""
    value, now = secrets.token_urlsafe(32), utcnow()
    values = dict(id=_digest(value), sid=secrets.token_urlsafe(24), account_id=account_id, device_serial=device_serial,
                  auth_time=auth_time, amr=amr, acr=acr, created_at=now, expires_at=now + SESSION_LIFETIME,
                  scope_txn=scope_txn)
    insert_row(current_db(), BrowserSession, **values)
    g.new_session = value
    return BrowserSession(**values)  # what was written (not attached to the database session)


def end_session() -> BrowserSession | None:
    value = request.cookies.get(cookie_name(SESSION_COOKIE))
    row = current_db().get(BrowserSession, _digest(value)) if value else None
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
    g.end_session = True
    return row


def init_app(app: Flask) -> None:
    @app.after_request
    def _cookies(response: Response) -> Response:
        secure = _secure()
        if g.get("new_binding"):
            response.set_cookie(cookie_name(BINDING_COOKIE), g.new_binding, max_age=30 * 24 * 3600, httponly=True,
                                secure=secure, samesite="Lax", path="/")
        if g.get("new_session"):
            response.set_cookie(cookie_name(SESSION_COOKIE), g.new_session, max_age=int(SESSION_LIFETIME.total_seconds()),
                                httponly=True, secure=secure, samesite="Lax", path="/")
        elif g.get("end_session"):
            response.delete_cookie(cookie_name(SESSION_COOKIE), path="/", secure=secure, samesite="Lax", httponly=True)
        return response
