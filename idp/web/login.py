"""Login at an RP by device signature (PROTOCOL §4 steps 2–5).

The transaction's challenge is single use: the first assertion for it, good or bad,
ends the pending state (a bad one marks it ``failed``; the page offers a retry through
the RP). The session goes only to the browser holding the transaction's binding
cookie, whether the phone signed on this device or across devices.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import segno
from flask import Blueprint, g, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue

from idp.context import services
from idp.device.assertions import find_device, verify_device_assertion
from idp.device import webauthn
from idp.errors import AccessDenied, InvalidRequest, NotFound, ProtocolError
from idp.oidc.authorize import release_for, purpose_for, stored_claims_request
from idp.oidc.server import query_client
from idp.oidc.session import current_db
from idp.policy import ACR_DEVICE, ACR_DEVICE_UV
from idp.storage.models import AuthorizationTransaction, utcnow
from idp.web import browser
from idp.web.base64 import json_body, string_field

bp = Blueprint("login", __name__)


class TransactionError(ProtocolError):
    error = "invalid_transaction"


def load_transaction(txn_id: Any, *, lock: bool = False) -> AuthorizationTransaction:
    if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 64:
        raise InvalidRequest("txn is required")
    txn = current_db().get(AuthorizationTransaction, txn_id, with_for_update=lock)
    if txn is None:
        raise NotFound("unknown transaction", error="invalid_transaction")
    if txn.state == "pending" and txn.expires_at <= utcnow():
        txn.state = "expired"
    g.ui_locales = txn.request.get("ui_locales")
    return txn


def qr_data_uri(text: str) -> str:
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", scale=6, border=2, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@bp.get("/login")
def login_page() -> ResponseReturnValue:
    txn = load_transaction(request.args.get("txn"))
    if not browser.same_browser(txn.browser_binding):
        raise AccessDenied("this sign-in was started in another browser")
    client = query_client(txn.client_id)
    wallet_url = services().settings.url(url_for("login.wallet_entry", txn=txn.id))
    return render_template("login.html", txn=txn, client=client, qr=qr_data_uri(wallet_url),
                           wallet_url=wallet_url, expires_in=max(0, int((txn.expires_at - utcnow()).total_seconds())))


@bp.get("/login/wallet")
def wallet_entry() -> ResponseReturnValue:
    """Where the QR code points: the phone's wallet opens this to approve the transaction."""
    txn = load_transaction(request.args.get("txn"))
    return render_template("wallet_entry.html", txn=txn, client=query_client(txn.client_id))


@bp.post("/login/options")
def options() -> ResponseReturnValue:
    txn = load_transaction(string_field(json_body(), "txn", max_length=64))
    if txn.state != "pending":
        raise TransactionError(f"this transaction is {txn.state}")
    client = query_client(txn.client_id)
    release = release_for(txn.request, client, stored_claims_request(txn))
    return jsonify({
        "publicKey": webauthn.request_options(rp_id=services().settings.rp_id, challenge=txn.challenge),
        "rp": {"name": client.name, "category": client.category, "claims": sorted(release.all),
               "purpose": purpose_for(txn.request, client)},
        "confirmation_code": txn.confirmation_code,
    })


@bp.post("/login/assertion")
def assertion() -> ResponseReturnValue:
    body = json_body()
    txn = load_transaction(string_field(body, "txn", max_length=64), lock=True)
    if txn.state != "pending":
        raise TransactionError(f"this transaction is {txn.state}; its challenge cannot be used again")
    credential = body.get("credential")
    try:
        device = find_device(credential)
        result = verify_device_assertion(device, credential, challenge=txn.challenge,
                                         expected_state="active", event="login.success")
    except ProtocolError as exc:
        txn.state, txn.failure = "failed", exc.error
        g.commit_despite_error = True
        raise
    txn.state = "authenticated"
    txn.account_id = device.account_id
    txn.device_serial = device.serial
    txn.auth_time = int(utcnow().timestamp())
    txn.amr = ["hwk", "user"] if result.user_verified else ["hwk"]
    txn.acr = ACR_DEVICE_UV if result.user_verified else ACR_DEVICE
    return jsonify({"status": "authenticated", "next": _next_for(txn)})


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
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _next_for(txn: AuthorizationTransaction) -> str:
    """Start the browser session once, in the opening browser only; then go to consent."""
    if not txn.session_started and browser.same_browser(txn.browser_binding):
        browser.start_session(account_id=txn.account_id, device_serial=txn.device_serial,
                              auth_time=txn.auth_time, amr=list(txn.amr or []), acr=txn.acr)
        txn.session_started = True
    return services().settings.url(url_for("consent.consent_page", txn=txn.id))
