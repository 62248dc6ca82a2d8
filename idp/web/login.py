"""Login at an RP by device signature (PROTOCOL §4 steps 2–5).

The transaction's challenge is single use: an assertion for it, good or bad, is checked
first and then ends the transaction in one compare-and-set from pending (so of concurrent
copies exactly one writes anything, and only it records a refusal); a bad one marks it
``failed`` (the page says why and offers a retry, which opens a fresh transaction for the
same request). A pending sign-in can be given more time (no time limit that cannot be
extended). The session goes only to the browser holding the transaction's binding cookie,
whether the phone signed on this device or across devices.

A way out at every step: the person can cancel and return to the service, which then
receives ``error=access_denied`` with its ``state`` and our ``iss`` (OIDC Core §3.1.2.6,
RFC 9207); and the phone can stop a cross-device sign-in whose confirmation code differs
from the computer's, which fails the transaction so the computer shows why.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import io
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import segno
from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import bindparam, update
from sqlalchemy.orm.attributes import set_committed_value

from idp.context import services
from idp.device.assertions import (
    AssertionRefused,
    FoundDevice,
    Refusal,
    check_assertion,
    clear_failures,
    client_address_key,
    credential_id_of,
    record_use,
)
from idp.device import webauthn
from idp.errors import AccessDenied, InvalidRequest, NotFound, ProtocolError
from idp import audit
from idp.oidc.authorize import (
    TRANSACTION_LIFETIME,
    error_redirect,
    purpose_for,
    release_for,
    safe_redirect_uri,
    stored_claims_request,
)
from idp.oidc.server import query_client
from idp.oidc.session import current_db
from idp.policy import reached_acr
from idp.storage.models import AuthorizationTransaction, BrowserSession, utcnow
from idp.storage.single_use import compare_and_set
from idp.web import browser, consent, i18n, page_cache
from idp.web.base64 import json_body, string_field
from idp.web.transactions import load_for_assertion, load_transaction

bp = Blueprint("login", __name__)

# Pages of this blueprint (the rest are JSON endpoints for the page script and the wallet).
HTML_ENDPOINTS = frozenset({"login.login_page", "login.wallet_entry", "login.retry", "login.cancel"})
# No time limit that cannot be extended (WCAG 2.2.1): "more time" adds this, up to MAX_LIFETIME.
EXTENSION = timedelta(minutes=10)
MAX_LIFETIME = timedelta(hours=2)


class TransactionError(ProtocolError):
    error = "invalid_transaction"


@functools.lru_cache(maxsize=256)
def qr_svg(text: str) -> bytes:
    """The QR code of ``text`` as SVG, drawn once per process (a transaction's wallet URL
    never changes, and a page reload or a second image request costs nothing)."""
    buffer = io.BytesIO()
    # A fixed mask skips segno's trial of all eight (bench/README.md); any mask gives a valid,
    # scannable symbol (ISO/IEC 18004 §7.8).
    segno.make(text, error="m", mask=0, micro=False).save(buffer, kind="svg", scale=6, border=2, dark="#000", light="#fff")
    return buffer.getvalue()


@bp.errorhandler(ProtocolError)
def _page_error(exc: ProtocolError) -> ResponseReturnValue:
    """The pages answer in the person's language; the JSON endpoints keep the JSON errors."""
    if request.endpoint in HTML_ENDPOINTS:
        return i18n.error_page(exc.error, exc.status)
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def page_token(txn: AuthorizationTransaction, purpose: str) -> str:
    """A form token bound to this transaction and this browser (like the consent page's)."""
    key = services().secret_key.encode()
    return hmac.new(key, f"{purpose}:{txn.id}:{txn.browser_binding}".encode(), hashlib.sha256).hexdigest()


def _own_transaction(txn_id: Any, *, lock: bool = False) -> AuthorizationTransaction:
    txn = load_transaction(txn_id, lock=lock)
    if not browser.same_browser(txn.browser_binding):
        raise AccessDenied("this sign-in was started in another browser", error="other_browser")
    return txn


def _who_asks(txn: AuthorizationTransaction) -> dict[str, Any]:
    client = query_client(txn.client_id)
    if client is None:
        raise NotFound("this service is no longer registered", error="invalid_transaction")
    release = release_for(txn.request, client, stored_claims_request(txn))
    return {"client": client, "claims": sorted(release.all), "purpose": purpose_for(txn.request, client)}


@bp.get("/login")
def login_page() -> ResponseReturnValue:
    txn = _own_transaction(request.args.get("txn"), lock=True)
    if txn.state == "authenticated":  # approved on the phone; without JavaScript the person pressed Continue
        return redirect(_next_for(txn), code=303)
    if txn.state in ("completed", "denied"):
        return i18n.error_page("already_answered", 409)
    who = _who_asks(txn)
    # What shapes the markup (the page is drawn once per process for each combination of these,
    # idp.web.page_cache), and what is only printed into it.
    inputs = {"service": i18n.client_name(who["client"]), "category": who["client"].category,
              "claims": tuple(who["claims"]), "purpose": who["purpose"], "txn_state": txn.state,
              "failure_message": _failure_message(txn)}
    values = {"txn_id": txn.id, "confirmation_code": txn.confirmation_code,
              "expires_in": max(0, int((txn.expires_at - utcnow()).total_seconds())),
              "wallet_url": services().settings.url(url_for("login.wallet_entry", txn=txn.id)),
              "qr": url_for("login.qr_image", txn=txn.id), "continue_url": url_for("login.login_page", txn=txn.id),
              "retry_token": page_token(txn, "retry"), "cancel_token": page_token(txn, "cancel")}
    if txn.state == "pending":
        # The passkey's request options come with the page (no round trip before the prompt);
        # POST /login/options gives the same to the phone's wallet.
        values["login_options"] = page_cache.tojson(
            webauthn.request_options(rp_id=services().settings.rp_id, challenge=txn.challenge))
    return page_cache.render("login.html", inputs, values)


@bp.get("/login/qr")
def qr_image() -> ResponseReturnValue:
    """The login page's QR code as its own image: only a browser that shows it fetches it
    (never a phone's passkey sign-in or a script), and it is drawn without the page."""
    txn = _own_transaction(request.args.get("txn"))
    wallet_url = services().settings.url(url_for("login.wallet_entry", txn=txn.id))
    response = Response(qr_svg(wallet_url), mimetype="image/svg+xml")
    # private: the image names a transaction of this browser; it lives no longer than one
    response.headers["Cache-Control"] = f"private, max-age={int(MAX_LIFETIME.total_seconds())}"
    return response


def _failure_message(txn: AuthorizationTransaction) -> str | None:
    if txn.state == "expired":
        return i18n.error_message("expired")
    if txn.state == "failed":
        return i18n.login_failure_message(txn.failure)
    return None


@bp.get("/login/wallet")
def wallet_entry() -> ResponseReturnValue:
    """Where the QR code points: the phone's wallet opens this to approve the transaction.

    It shows who asks for what and the confirmation code the computer shows. In
    development the page itself is the demo wallet: it signs with this browser's passkey.
    """
    txn = load_transaction(request.args.get("txn"), lock=True)
    if txn.state == "pending" and txn.phone_opened_at is None:
        txn.phone_opened_at = utcnow()  # the computer now shows "opened on your phone"
    return render_template("wallet_entry.html", txn=txn, demo=services().settings.development,
                           finished=txn.state not in ("pending",), service_address=_service_address(txn),
                           **_who_asks(txn))


def _service_address(txn: AuthorizationTransaction) -> str | None:
    """Where the request came from, as far as we know it: the host of the service's registered
    redirect URI (the only address the answer can go to, RFC 6749 §3.1.2)."""
    target = safe_redirect_uri(txn.request)
    return urlsplit(target).hostname if target else None


@bp.post("/login/cancel")
def cancel() -> ResponseReturnValue:
    """"Cancel and return to the service": the person ends the sign-in from the login page.

    The service receives ``error=access_denied`` with its ``state`` and ``iss`` (OIDC Core
    §3.1.2.6, RFC 9207), at its registered redirect URI only (RFC 6749 §4.1.2.1). Only the
    browser that opened the sign-in may cancel it (the form token is bound to it).
    """
    txn = _own_transaction(request.form.get("txn"), lock=True)
    if not hmac.compare_digest(request.form.get("csrf_token", ""), page_token(txn, "cancel")):
        raise AccessDenied("the form has expired or was tampered with", error="invalid_csrf")
    if txn.state in ("completed", "denied"):
        return i18n.error_page("already_answered", 409)
    target = safe_redirect_uri(txn.request)
    if target is None:
        raise NotFound("this service is no longer registered", error="invalid_transaction")
    txn.state = "denied"
    audit.record(current_db(), "login.cancelled", client=txn.client_id)
    return error_redirect(target, "access_denied", "the person cancelled the sign-in", txn.request.get("state"))


@bp.post("/login/mismatch")
def mismatch() -> ResponseReturnValue:
    """The phone reports that its confirmation code differs from the computer's: someone else
    may have started this sign-in. The transaction fails at once (its challenge can no longer
    be signed) and the computer's page, polling ``/login/status``, says why."""
    txn = load_transaction(string_field(json_body(), "txn", max_length=64), lock=True)
    if txn.state != "pending":
        raise TransactionError(f"this transaction is {txn.state}")
    txn.state, txn.failure = "failed", "code_mismatch"
    audit.record(current_db(), "login.code_mismatch", client=txn.client_id)
    return jsonify({"status": "failed", "error": "code_mismatch"})


@bp.post("/login/extend")
def extend() -> ResponseReturnValue:
    """More time for a pending sign-in (WCAG 2.2.1 Timing Adjustable), up to MAX_LIFETIME in all."""
    txn = _own_transaction(string_field(json_body(), "txn", max_length=64), lock=True)
    if txn.state != "pending":
        raise TransactionError(f"this transaction is {txn.state}")
    now = utcnow()
    txn.expires_at = max(txn.expires_at, min(now + EXTENSION, txn.created_at + MAX_LIFETIME))
    remaining = int((txn.expires_at - now).total_seconds())
    return jsonify({"status": "pending", "expires_in": remaining,
                    "can_extend": txn.expires_at < txn.created_at + MAX_LIFETIME})


@bp.post("/login/retry")
def retry() -> ResponseReturnValue:
    """Start again after a failed or expired sign-in, without going back to the service.

    The new transaction carries the same authorization request (the RP's state, nonce and
    PKCE challenge are still unanswered) with a fresh challenge and confirmation code. Its
    id is derived from the old one, so a double submit lands on the same new transaction.
    """
    txn = _own_transaction(request.form.get("txn"), lock=True)
    if not hmac.compare_digest(request.form.get("csrf_token", ""), page_token(txn, "retry")):
        raise AccessDenied("the form has expired or was tampered with", error="invalid_csrf")
    new_id = base64.urlsafe_b64encode(hmac.new(services().secret_key.encode(), f"retry:{txn.id}".encode(),
                                               hashlib.sha256).digest()[:24]).decode().rstrip("=")
    existing = current_db().get(AuthorizationTransaction, new_id)
    if existing is not None:
        return redirect(url_for("login.login_page", txn=existing.id), code=303)
    if txn.state not in ("failed", "expired"):
        return redirect(url_for("login.login_page", txn=txn.id), code=303)
    fresh = AuthorizationTransaction(
        id=new_id, client_id=txn.client_id, request=dict(txn.request), browser_binding=txn.browser_binding,
        challenge=secrets.token_bytes(32), confirmation_code=f"{secrets.randbelow(10_000):04d}",
        expires_at=utcnow() + TRANSACTION_LIFETIME)
    current_db().add(fresh)
    return redirect(url_for("login.login_page", txn=fresh.id), code=303)


@bp.post("/login/options")
def options() -> ResponseReturnValue:
    txn = load_transaction(string_field(json_body(), "txn", max_length=64))
    if txn.state != "pending":
        raise TransactionError(f"this transaction is {txn.state}")
    client = query_client(txn.client_id)
    release = release_for(txn.request, client, stored_claims_request(txn))
    return jsonify({
        "publicKey": webauthn.request_options(rp_id=services().settings.rp_id, challenge=txn.challenge),
        # Where and when the request came from, for the wallet to show (a relayed request
        # is noticed by a service or a time the person does not recognise).
        "requested_at": int(txn.created_at.timestamp()),
        "rp": {"name": client.name, "category": client.category, "claims": sorted(release.all),
               "purpose": purpose_for(txn.request, client)},
        "confirmation_code": txn.confirmation_code,
    })


@bp.post("/login/assertion")
def assertion() -> ResponseReturnValue:
    """Check first, then write: every check of the signature runs on what one statement read
    (:func:`load_for_assertion`), and the outcome is written by compare-and-sets that fail if
    the transaction or the device changed since. The transaction goes from pending to its
    final state once (the single use of its challenge: of concurrent copies one wins), and the
    database's write lock (SQLite) is taken only after the signature was verified."""
    body = json_body()
    txn_id = string_field(body, "txn", max_length=64)
    credential = body.get("credential")
    malformed: InvalidRequest | None = None
    try:
        credential_id: bytes | None = credential_id_of(credential)
    except InvalidRequest as exc:
        credential_id, malformed = None, exc
    txn, found = load_for_assertion(txn_id, credential_id, address=client_address_key())
    if txn.state != "pending":
        raise _used(txn)
    try:
        if found is None:
            raise malformed or Refusal(AssertionRefused("unknown credential", error="unknown_credential"), None,
                                       "unknown_credential")
        result = check_assertion(found, credential, challenge=txn.challenge, expected_state="active")
    except (Refusal, InvalidRequest) as exc:
        raise _refuse(txn, exc) from None
    device = found.device
    now = utcnow()
    same_browser = browser.same_browser(txn.browser_binding)  # the signature came from this very browser
    settled = {"account_id": device.account_id, "device_serial": device.serial, "auth_time": int(now.timestamp()),
               "amr": ["hwk", "user"] if result.user_verified else ["hwk"],
               "acr": reached_acr(user_verified=result.user_verified, hardware=device.hardware_attested),
               "session_started": same_browser}
    _settle(txn, **settled)
    if not record_use(found, result, now=now):
        _use_changed_device(txn, found, credential)
    audit.record(current_db(), "login.success", serial=device.serial, account=device.account_id)
    # When nothing needs the person any more (a remembered consent), the answer goes to the
    # service at once: the transaction completes with its code in its one compare-and-set.
    checked = consent.remembered(txn, found.account, found.consent) if same_browser else None
    if checked is None:
        _complete(txn, "authenticated", settled)
        if same_browser:
            _new_session(txn, cross_device=False)
        # approved on another device: the opening browser picks the session up (_next_for)
        return jsonify({"status": "authenticated", "next": _consent_url(txn)})
    session = browser.SessionView(_new_session(txn, cross_device=False), found.account)
    answered = consent.finish_remembered(txn, session, checked,
                                         lambda code: _complete(txn, "completed", {**settled, **code}))
    return jsonify({"status": "authenticated", "next": answered})


def _complete(txn: AuthorizationTransaction, state: str, values: dict[str, Any]) -> None:
    """pending → ``state`` with what the login settled, once: the challenge is spent (a
    concurrent copy that got here first makes this request fail whole, its writes undone)."""
    if not _take(txn, state=state, **values):
        raise _used(txn)
    _settle(txn, state=state)


def _used(txn: AuthorizationTransaction) -> TransactionError:
    current_db().refresh(txn)
    return TransactionError(f"this transaction is {txn.state}; its challenge cannot be used again")


def _refuse(txn: AuthorizationTransaction, exc: Refusal | InvalidRequest) -> ProtocolError:
    """A refused assertion fails its transaction (the person may start again) once: only the
    request that takes the pending state records the refusal (audit, failure count, clone hold)."""
    error = exc.error if isinstance(exc, Refusal) else exc
    if not _take(txn, state="failed", failure=error.error):
        return _used(txn)
    g.commit_despite_error = True
    if isinstance(exc, Refusal):
        try:
            exc.record("login.failure")
        except AssertionRefused as unknown:
            return unknown
    return error


def _use_changed_device(txn: AuthorizationTransaction, found: FoundDevice, credential: Any) -> None:
    """The device changed between the read and the counter's compare-and-set (another login
    with it, a suspension): check again on the row as it is now, under this request's write
    lock (SQLite) or row lock (PostgreSQL), exactly as if the two had run one after the other."""
    current_db().refresh(found.device, with_for_update=True)
    try:
        result = check_assertion(found, credential, challenge=txn.challenge, expected_state="active")
    except Refusal as refusal:
        raise _refuse(txn, refusal) from None
    found.device.sign_count, found.device.last_used_at = result.new_sign_count, utcnow()
    clear_failures(found)


def _take(txn: AuthorizationTransaction, **values: Any) -> bool:
    """pending → a final state, once (idp.storage.single_use): the challenge is spent."""
    params = {"account_id": None, "device_serial": None, "auth_time": None, "amr": None, "acr": None,
              "session_started": False, "failure": None, "code_hash": None, "code_expires_at": None,
              "code_session_id": None, **values}
    return current_db().connection().execute(_SETTLE, {
        "txn_id": txn.id, "now": utcnow(), **{f"new_{key}": value for key, value in params.items()}}).rowcount == 1


def _settle(txn: AuthorizationTransaction, **values: Any) -> None:
    """Give the loaded transaction what was written (no second UPDATE at commit)."""
    for key, value in values.items():
        set_committed_value(txn, key, value)


_TXN = AuthorizationTransaction.__table__.c
_SETTLE = (update(AuthorizationTransaction.__table__)
           .where(_TXN.id == bindparam("txn_id"), _TXN.state == "pending", _TXN.expires_at > bindparam("now"))
           .values({column: bindparam(f"new_{column}") for column in (
               "state", "account_id", "device_serial", "auth_time", "amr", "acr", "session_started", "failure",
               "code_hash", "code_expires_at", "code_session_id")}))


@bp.get("/login/status")
def status() -> ResponseReturnValue:
    txn = load_transaction(request.args.get("txn"), lock=True)
    if not browser.same_browser(txn.browser_binding):
        raise AccessDenied("only the browser that opened this sign-in can follow it")
    body: dict[str, Any] = {"status": txn.state if txn.state in ("pending", "failed", "expired") else "authenticated"}
    if body["status"] == "authenticated":
        body["next"] = _next_for(txn)
    elif txn.state == "failed":
        body["error"] = txn.failure
    if body["status"] == "pending" and txn.phone_opened_at is not None:
        body["phone"] = "opened"  # progress only: the wallet page for this sign-in was opened
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _next_for(txn: AuthorizationTransaction) -> str:
    """A session approved on another device, picked up by the opening browser once: of its
    concurrent status polls and page loads, the one whose compare-and-set marks it started
    (a row lock alone does not serialise them on SQLite)."""
    if not txn.session_started and browser.same_browser(txn.browser_binding) and compare_and_set(
            current_db(), AuthorizationTransaction, AuthorizationTransaction.id == txn.id,
            AuthorizationTransaction.session_started.is_(False), session_started=True):
        _new_session(txn, cross_device=True)
    return _consent_url(txn)


def _consent_url(txn: AuthorizationTransaction) -> str:
    return services().settings.url(url_for("consent.consent_page", txn=txn.id))


def _new_session(txn: AuthorizationTransaction, *, cross_device: bool) -> BrowserSession:
    """Start the browser session of a signed-in transaction, in the opening browser only.

    Only :func:`assertion` knows the signature came from this very browser. A session the
    opening browser picks up later (its status poll, or its page reloaded) was approved on
    another device, perhaps by someone a phishing link reached (OAuth Cross-Device Flows
    Security BCP): that session finishes this one authorization request and nothing else,
    neither single sign-on to other RPs nor the account pages.
    """
    return browser.start_session(account_id=txn.account_id, device_serial=txn.device_serial,
                                 auth_time=txn.auth_time, amr=list(txn.amr or []), acr=txn.acr,
                                 scope_txn=txn.id if cross_device else None)
