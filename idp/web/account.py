"""The person's account page (``/account``): devices, consents, verified attributes, own data.

Signing in: the IdP session (``idp_session``) from any RP login counts; otherwise the
page offers a dedicated WebAuthn sign-in with a device key. Its challenge travels in a
signed, short-lived token bound to this browser and is accepted once
(``idp.oidc.replay``), so no table is needed for it.

Every change is a POST with a CSRF token bound to the session, asked for on a
confirmation page first, and audited: revoking a device through
:func:`idp.ca.lifecycle.revoke` (``by="person"``), withdrawing a consent through
:func:`idp.consent.withdraw_consent`, exporting data and signing out here. A person
can act only on their own devices and consents; anything else is "not found".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select, update

from idp import audit
from idp.ca import lifecycle
from idp.consent import withdraw_consent
from idp.context import services
from idp.device import webauthn
from idp.device.assertions import find_device, verify_device_assertion
from idp.errors import AccessDenied, InvalidRequest, NotFound, ProtocolError
from idp.oidc import claims as claims_mod
from idp.oidc.replay import remember_once
from idp.oidc.session import current_db
from idp.policy import reached_acr
from idp.storage.models import (
    BrowserSession,
    Client,
    Consent,
    DeviceCertificate,
    Disclosure,
    JpkiBinding,
    utcnow,
)
from idp.web import browser, i18n
from idp.web.base64 import b64url_decode, b64url_encode, json_body, string_field

bp = Blueprint("account", __name__)

SIGN_IN_SECONDS = 300
REVOKE_REASONS = ("keyCompromise", "cessationOfOperation")
DISCLOSURES_SHOWN = 20
JSON_ENDPOINTS = frozenset({"account.login_options", "account.login_assertion"})
NOTICES = {
    "signed_out": lazy_gettext("You are signed out."),
    "device_revoked": lazy_gettext("The device was revoked. It can no longer sign in anywhere."),
    "device_revoked_self": lazy_gettext(
        "The device was revoked. You were signed in with it, so you are now signed out."),
    "already_revoked": lazy_gettext("This device was already revoked. Nothing changed."),
    "consent_withdrawn": lazy_gettext(
        "Consent withdrawn. The service can no longer receive your information without asking again."),
    "already_withdrawn": lazy_gettext("This consent was already withdrawn. Nothing changed."),
}


def _notice(code: str | None) -> str | None:
    text = NOTICES.get(code or "")
    return str(text) if text is not None else None


@bp.errorhandler(ProtocolError)
def _error(exc: ProtocolError) -> ResponseReturnValue:
    if request.endpoint in JSON_ENDPOINTS:
        response = jsonify(exc.body())
        response.status_code = exc.status
        response.headers.update(exc.headers)
        response.headers["Cache-Control"] = "no-store"
        return response
    if exc.error == "login_required" and request.method == "GET":
        return redirect(url_for("account.overview"), code=303)
    return i18n.error_page(exc.error, exc.status)


@bp.after_request
def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# ---- session and CSRF ----

def _session() -> browser.SessionView | None:
    return browser.current_session()


def _require_session() -> browser.SessionView:
    session = _session()
    if session is None:
        raise AccessDenied("sign in to your account first", error="login_required")
    return session


def csrf_token(session: browser.SessionView, action: str) -> str:
    key = services().secret_key.encode()
    return hmac.new(key, f"account:{action}:{session.row.id}".encode(), hashlib.sha256).hexdigest()


def _check_csrf(session: browser.SessionView, action: str) -> None:
    if not hmac.compare_digest(request.form.get("csrf_token", ""), csrf_token(session, action)):
        raise AccessDenied("the form has expired or was tampered with", error="invalid_csrf")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().secret_key, salt="idp.account.sign-in")


# ---- pages ----

@bp.get("/account")
def overview() -> ResponseReturnValue:
    session = _session()
    notice = _notice(request.args.get("notice"))
    if session is None:
        return render_template("account/signin.html", notice=notice)
    db = current_db()
    account = session.account
    now = utcnow()
    devices = db.scalars(select(DeviceCertificate).where(DeviceCertificate.account_id == account.id)
                        .order_by(DeviceCertificate.issued_at.desc())).all()
    bindings = db.scalars(select(JpkiBinding).where(JpkiBinding.account_id == account.id)
                         .order_by(JpkiBinding.verified_at.desc())).all()
    return render_template(
        "account/overview.html", account=account, session=session, notice=notice,
        devices=[_device_view(d, now, session) for d in devices], bindings=bindings,
        services=_services_view(account.id), attributes=_attributes(account),
        csrf=lambda action: csrf_token(session, action))


def _device_state(device: DeviceCertificate, now: datetime) -> str:
    if device.state == "active" and device.not_after <= now:
        return "expired"
    return device.state


def _device_view(device: DeviceCertificate, now: datetime, session: browser.SessionView | None) -> dict[str, Any]:
    return {
        "serial": device.serial,
        "model": device.model_hint or None,
        "synced": device.backup_eligible,
        "hardware_attested": device.hardware_attested,
        "enrolled": device.activated_at or device.issued_at,
        "last_used": device.last_used_at,
        "state": _device_state(device, now),
        "revoked_at": device.revoked_at,
        "reason": device.revocation_reason,
        "not_after": device.not_after,
        "current": session is not None and session.device_serial == device.serial,
        "revocable": device.state in ("active", "pending", lifecycle.SUSPENDED),
    }


def _services_view(account_id: str) -> list[dict[str, Any]]:
    """Each RP the person consented to: what was allowed, what it actually received and when."""
    db = current_db()
    consents = db.scalars(select(Consent).where(Consent.account_id == account_id)
                          .order_by(Consent.granted_at.desc())).all()
    salt = services().pairwise_salt
    result = []
    for consent in consents:
        client = db.get(Client, consent.client_id)
        if client is None:
            continue
        disclosures = db.scalars(select(Disclosure).where(Disclosure.account_id == account_id,
                                                          Disclosure.client_id == consent.client_id)
                                 .order_by(Disclosure.at.desc(), Disclosure.id.desc())
                                 .limit(DISCLOSURES_SHOWN)).all()
        result.append({
            "client_id": client.client_id,
            "name": i18n.client_name(client),
            "category": client.rp_category,
            "claims": list(consent.claims),
            "purpose": consent.purpose,
            "granted_at": consent.granted_at,
            "withdrawn_at": consent.withdrawn_at,
            "remembered": bool(consent.policy_version),
            "sub": claims_mod.subject(account_id, client.sector_identifier, salt),
            "sector": client.sector_identifier,
            "disclosures": [{"at": d.at, "claims": list(d.claims), "channel": d.channel} for d in disclosures],
        })
    return result


def _attributes(account: Any) -> list[tuple[str, str]]:
    values = claims_mod.claim_values(account, ("name", "birthdate", "gender", "address")) \
        if account.attributes_current else {}
    rows = []
    for name in ("name", "birthdate", "gender", "address"):
        if name == "gender" and name not in values and account.attributes_current:
            rows.append((i18n.claim_label(name), i18n.claim_value(name, "3")))
            continue
        rows.append((i18n.claim_label(name), i18n.claim_value(name, values.get(name))))
    return rows


# ---- signing in with a device key ----

@bp.post("/account/login/options")
def login_options() -> ResponseReturnValue:
    challenge = secrets.token_bytes(32)
    state = _serializer().dumps({"c": b64url_encode(challenge), "b": browser.binding_digest()})
    options = webauthn.request_options(rp_id=services().settings.rp_id, challenge=challenge)
    return jsonify({"publicKey": options, "state": state, "expires_in": SIGN_IN_SECONDS})


@bp.post("/account/login/assertion")
def login_assertion() -> ResponseReturnValue:
    body = json_body()
    state = string_field(body, "state", max_length=512)
    try:
        data = _serializer().loads(state, max_age=SIGN_IN_SECONDS)
        challenge = b64url_decode(data["c"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise InvalidRequest("the sign-in has expired; start again", error="expired") from None
    if not browser.same_browser(data.get("b", "")):
        raise AccessDenied("this sign-in was started in another browser", error="other_browser")
    if not remember_once(f"account-signin:{data['c']}", SIGN_IN_SECONDS + 60):
        raise InvalidRequest("this sign-in challenge was already used; start again", error="expired")
    found = find_device(body.get("credential"))
    result = verify_device_assertion(found, body["credential"], challenge=challenge, expected_state="active",
                                     event="account.signed_in")
    device = found.device
    browser.start_session(account_id=device.account_id, device_serial=device.serial,
                          auth_time=int(utcnow().timestamp()),
                          amr=["hwk", "user"] if result.user_verified else ["hwk"],
                          acr=reached_acr(user_verified=result.user_verified, hardware=device.hardware_attested))
    return jsonify({"status": "authenticated", "next": url_for("account.overview")})


@bp.post("/account/logout")
def logout() -> ResponseReturnValue:
    session = _require_session()
    _check_csrf(session, "logout")
    try:  # RP-Initiated Logout's helper also sends back-channel logout tokens to the RPs
        from idp.oidc.logout import end_and_notify
    except ImportError:
        browser.end_session()
    else:
        end_and_notify(None)
    audit.record(current_db(), "account.signed_out", account=session.account_id)
    return redirect(url_for("account.overview", notice="signed_out"), code=303)


# ---- devices ----

def _own_device(serial: str, session: browser.SessionView) -> DeviceCertificate:
    if not serial or len(serial) > 42 or any(ch not in "0123456789abcdef" for ch in serial):
        raise NotFound("no such device", error="not_found")
    device = current_db().get(DeviceCertificate, serial, with_for_update=True)
    if device is None or device.account_id != session.account_id:
        raise NotFound("no such device", error="not_found")
    return device


@bp.get("/account/devices/<serial>/revoke")
def revoke_confirm(serial: str) -> ResponseReturnValue:
    session = _require_session()
    device = _own_device(serial, session)
    if device.state == "revoked":
        return redirect(url_for("account.overview", notice="already_revoked"), code=303)
    return render_template("account/revoke.html", device=_device_view(device, utcnow(), session),
                           csrf_token=csrf_token(session, f"revoke:{serial}"), reasons=REVOKE_REASONS)


@bp.post("/account/devices/<serial>/revoke")
def revoke(serial: str) -> ResponseReturnValue:
    session = _require_session()
    _check_csrf(session, f"revoke:{serial}")
    reason = request.form.get("reason")
    if reason not in REVOKE_REASONS:
        raise InvalidRequest("choose why the device is revoked", error="invalid_request")
    device = _own_device(serial, session)
    if device.state == "revoked":
        return redirect(url_for("account.overview", notice="already_revoked"), code=303)
    try:
        lifecycle.revoke(current_db(), device, reason=reason, by="person")
    except lifecycle.LifecycleError:
        return redirect(url_for("account.overview", notice="already_revoked"), code=303)
    # End every session the device opened at once (they are already unusable: belt and braces).
    current_db().execute(update(BrowserSession).where(BrowserSession.device_serial == device.serial,
                                                      BrowserSession.ended_at.is_(None))
                         .values(ended_at=utcnow()))
    if session.device_serial == device.serial:
        g.end_session = True
        return redirect(url_for("account.overview", notice="device_revoked_self"), code=303)
    return redirect(url_for("account.overview", notice="device_revoked"), code=303)


# ---- consents ----

def _own_consent(client_id: str, session: browser.SessionView) -> tuple[Consent, Client]:
    if not client_id or len(client_id) > 64:
        raise NotFound("no such consent", error="not_found")
    db = current_db()
    consent = db.scalars(select(Consent).where(Consent.account_id == session.account_id,
                                               Consent.client_id == client_id)).first()
    client = db.get(Client, client_id)
    if consent is None or client is None:
        raise NotFound("no such consent", error="not_found")
    return consent, client


@bp.get("/account/consents/<client_id>/withdraw")
def withdraw_confirm(client_id: str) -> ResponseReturnValue:
    session = _require_session()
    consent, client = _own_consent(client_id, session)
    if consent.withdrawn_at is not None:
        return redirect(url_for("account.overview", notice="already_withdrawn"), code=303)
    return render_template("account/withdraw.html", consent=consent,
                           name=i18n.client_name(client),
                           category=client.rp_category, client_id=client.client_id,
                           csrf_token=csrf_token(session, f"withdraw:{client_id}"))


@bp.post("/account/consents/<client_id>/withdraw")
def withdraw(client_id: str) -> ResponseReturnValue:
    session = _require_session()
    _check_csrf(session, f"withdraw:{client_id}")
    _own_consent(client_id, session)
    if not withdraw_consent(current_db(), session.account_id, client_id):
        return redirect(url_for("account.overview", notice="already_withdrawn"), code=303)
    return redirect(url_for("account.overview", notice="consent_withdrawn"), code=303)


# ---- my data ----

def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def export_data(session: browser.SessionView) -> dict[str, Any]:
    """Everything the IdP keeps about the person, in their hands (APPI disclosure request).

    Left out on purpose: keyed digests of the card serial (useless without the IdP's key)
    and the internal account id, which never leaves the IdP.
    """
    db = current_db()
    account = session.account
    now = utcnow()
    devices = db.scalars(select(DeviceCertificate).where(DeviceCertificate.account_id == account.id)
                        .order_by(DeviceCertificate.issued_at)).all()
    bindings = db.scalars(select(JpkiBinding).where(JpkiBinding.account_id == account.id)
                         .order_by(JpkiBinding.verified_at)).all()
    disclosures = db.scalars(select(Disclosure).where(Disclosure.account_id == account.id)
                             .order_by(Disclosure.at, Disclosure.id)).all()
    names = {c["client_id"]: c["name"] for c in _services_view(account.id)}
    return {
        "exported_at": _iso(now),
        "issuer": services().settings.issuer,
        "verified_attributes": {
            "name": account.name,
            "gender": {"1": "male", "2": "female"}.get(account.gender, "unknown"),
            "birthdate": claims_mod.claim_values(account, ["birthdate"]).get("birthdate")
            if account.attributes_current else None,
            "address": account.address,
            "verified_at": _iso(account.verified_at),
            "current": account.attributes_current,
        },
        "identity_proofs": [
            {"method": "JPKI signing certificate (My Number Card)", "verified_at": _iso(b.verified_at),
             "certificate_not_after": _iso(b.not_after), "revoked_at": _iso(b.revoked_at),
             "revocation_reason": b.revocation_reason} for b in bindings],
        "devices": [
            {"serial": d.serial, "state": _device_state(d, now), "model_hint": d.model_hint or None,
             "issued_at": _iso(d.issued_at), "activated_at": _iso(d.activated_at),
             "last_used_at": _iso(d.last_used_at), "not_after": _iso(d.not_after),
             "revoked_at": _iso(d.revoked_at), "revocation_reason": d.revocation_reason,
             "synced_passkey": d.backup_eligible, "hardware_attested": d.hardware_attested,
             "certificate_pem": x509.load_der_x509_certificate(d.certificate_der)
             .public_bytes(Encoding.PEM).decode("ascii")} for d in devices],
        "services": [
            {"client_id": s["client_id"], "name": s["name"], "category": s["category"],
             "your_identifier_there": s["sub"], "consented_claims": s["claims"], "purpose": s["purpose"],
             "granted_at": _iso(s["granted_at"]), "withdrawn_at": _iso(s["withdrawn_at"]),
             "remembered": s["remembered"]} for s in _services_view(account.id)],
        "disclosures": [
            {"service": names.get(d.client_id, d.client_id), "client_id": d.client_id, "claims": list(d.claims),
             "channel": d.channel, "at": _iso(d.at)} for d in disclosures],
    }


@bp.post("/account/export")
def export() -> ResponseReturnValue:
    session = _require_session()
    _check_csrf(session, "export")
    data = export_data(session)
    audit.record(current_db(), "account.data_exported", account=session.account_id)
    response = Response(json.dumps(data, ensure_ascii=False, indent=2), mimetype="application/json")
    stamp = utcnow().strftime("%Y%m%d")
    response.headers["Content-Disposition"] = f'attachment; filename="jp-digital-id-my-data-{stamp}.json"'
    return response
