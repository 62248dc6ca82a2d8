"""The consent page (PROTOCOL §4.6): who asks, for which claims, for what purpose.

Works without JavaScript: a plain form with hidden ``txn`` and ``csrf_token``. The CSRF
token is an HMAC over the transaction and this browser's binding, so a form lifted
from another browser or another transaction is refused. A transaction completes once:
a double submit shows a clear page and grants nothing twice.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable

from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import update

from idp import audit
from idp.consent import find_consent, grant_consent
from idp.context import services
from idp.errors import AccessDenied, ProtocolError, UnsafeAuthorizationRequest
from idp.oidc import claims as claims_mod
from idp.oidc.authorize import (
    Checked,
    RedirectableError,
    consent_answers,
    consented_scopes,
    error_redirect,
    issue_code,
    purpose_for,
    release_for,
    stored_request,
)
from idp.oidc.server import AuthorizedUser
from idp.oidc.session import current_db
from idp.storage.models import Account, AuthorizationTransaction, Consent
from idp.storage.single_use import compare_and_set
from idp.web import assurance, browser, i18n
from idp.web.transactions import load_transaction

bp = Blueprint("consent", __name__)

# Categories whose "remember this choice" box starts unticked: medical and financial data are
# special care-required or sensitive, and consent to share them must be an act of the person
# each time it is remembered (APPI Art. 2(3), Art. 27; the PPC guidelines on consent).
ASK_EACH_TIME = frozenset({"medical", "financial"})


@bp.errorhandler(ProtocolError)
def _page_error(exc: ProtocolError) -> ResponseReturnValue:
    """A refused consent page or decision: a page in the person's language, nothing granted
    (the request's transaction rolls back, so nothing is recorded either)."""
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json" \
            and "text/html" not in request.accept_mimetypes:
        response = jsonify(exc.body())
        response.status_code = exc.status
        return response
    return i18n.error_page(exc.error, exc.status)


def safe_link(value: Any) -> str | None:
    """Client metadata URLs (logo, policy, terms) shown to the person: absolute http(s) only."""
    if not isinstance(value, str) or len(value) > 2000:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or any(ch in value for ch in "\r\n\t "):
        return None
    return value


def csrf_token(txn: AuthorizationTransaction) -> str:
    key = services().secret_key.encode()
    return hmac.new(key, f"consent:{txn.id}:{txn.browser_binding}".encode(), hashlib.sha256).hexdigest()


def _authenticated_transaction(txn_id: Any, txn: AuthorizationTransaction | None = None,
                               ) -> tuple[AuthorizationTransaction, browser.SessionView]:
    txn = txn or load_transaction(txn_id)
    if not browser.same_browser(txn.browser_binding):
        raise AccessDenied("this sign-in was started in another browser", error="other_browser")
    if txn.state in ("completed", "denied"):
        raise AccessDenied("this sign-in has already been answered", error="already_answered")
    if txn.state != "authenticated":
        raise AccessDenied(f"this sign-in is {txn.state}", error="invalid_transaction")
    session = browser.current_session(for_transaction=txn.id)
    if session is None or session.account_id != txn.account_id:
        raise AccessDenied("sign in again: your session has ended", error="login_required")
    return txn, session


def _resume(txn: AuthorizationTransaction, session: browser.SessionView) -> Checked:
    """The request as validated at /authorize (stored with the transaction)."""
    return stored_request(txn, session.account)


def answer(txn: AuthorizationTransaction, state: str, **code: Any) -> None:
    """authenticated → ``state`` (completed, with its ``code`` columns, or denied) in one
    compare-and-set: of any number of concurrent submissions (or page loads answered by a
    remembered consent) exactly one answers the transaction; the others are told it was
    already answered."""
    if not compare_and_set(current_db(), AuthorizationTransaction, AuthorizationTransaction.id == txn.id,
                           AuthorizationTransaction.state == "authenticated", state=state, **code):
        raise AccessDenied("this sign-in has already been answered", error="already_answered")


def _finish(txn: AuthorizationTransaction, session: browser.SessionView, checked: Checked,
            complete: Callable[[dict[str, Any]], None] | None = None) -> Response:
    """The code response; ``complete`` (by default :func:`answer`) completes the transaction
    with the code."""
    user = AuthorizedUser(account_id=session.account_id, known_account=session.account, auth_time=txn.auth_time,
                          acr=txn.acr, amr=list(txn.amr or []), session_id=session.client_sid(txn.client_id),
                          claims_request=checked.claims_request, device_serial=txn.device_serial)
    return issue_code(checked, user, session, complete or (lambda code: answer(txn, "completed", **code)))


def _keep_code(txn: AuthorizationTransaction, code: dict[str, Any]) -> None:
    """The code of a transaction this request has already completed (:func:`answer`)."""
    if code:
        current_db().execute(update(AuthorizationTransaction).where(AuthorizationTransaction.id == txn.id)
                             .values(**code))


def _remembered(checked: Checked, consent: Consent | None) -> bool:
    """A remembered ``consent`` answers this request without asking (no ``prompt=consent``)."""
    return "consent" not in checked.prompts and consent_answers(consent, checked.params, checked.client,
                                                                checked.claims_request)


def remembered(txn: AuthorizationTransaction, account: Account, consent: Consent | None) -> Checked | None:
    """The stored request when no page is needed right after the signature: the sign-in
    reached the category's ``acr`` and the account's remembered ``consent`` (read with its
    device) answers the request. None when anything is left to ask or to explain: the
    consent page then takes over as before. Decided before the login writes anything, so the
    transaction goes from pending to its final state in one compare-and-set (idp.web.login).
    """
    try:
        checked = stored_request(txn, account)
    except (RedirectableError, UnsafeAuthorizationRequest):
        return None
    if not services().policy[checked.client.category].reached_by(txn.acr) or not _remembered(checked, consent):
        return None
    return checked


def finish_remembered(txn: AuthorizationTransaction, session: browser.SessionView, checked: Checked,
                      complete: Callable[[dict[str, Any]], None]) -> str:
    """The service's redirect URI with the code: the consent page's answer without the round
    trip; ``complete`` is the login's compare-and-set that ends the transaction with the code."""
    return _finish(txn, session, checked, complete).location


@bp.get("/consent")
def consent_page() -> ResponseReturnValue:
    pending = load_transaction(request.args.get("txn"))
    if pending.state == "pending" and browser.same_browser(pending.browser_binding):
        return redirect(url_for("login.login_page", txn=pending.id))  # not signed yet: back to sign-in
    txn, session = _authenticated_transaction(pending.id, pending)
    try:
        checked = _resume(txn, session)
    except RedirectableError as exc:
        answer(txn, "denied")
        return exc.response()
    client = checked.client
    refused = assurance.refusal(txn, client, checked.redirect_uri, checked.params.get("state"))
    if refused is not None:
        return refused
    if _remembered(checked, find_consent(current_db(), txn.account_id, client.client_id)):
        return _finish(txn, session, checked)
    release = release_for(checked.params, client, checked.claims_request)
    account = current_db().get(Account, txn.account_id)
    values = claims_mod.claim_values(account, release.all)
    links = {key: safe_link(client.metadata.get(key)) for key in ("logo_uri", "policy_uri", "tos_uri", "client_uri")}
    return render_template("consent.html", txn=txn, client=client, claims=sorted(release.all), values=values,
                           purpose=purpose_for(checked.params, client), csrf_token=csrf_token(txn),
                           offline="offline_access" in consented_scopes(checked.params),
                           attributes_current=account.attributes_current, links=links,
                           contacts=contacts(client.metadata), remember_default=client.category not in ASK_EACH_TIME)


def contacts(metadata: Any) -> list[str]:
    """Who to ask at the service: its registered ``contacts`` (RFC 7591 §2), at most three short ones."""
    value = metadata.get("contacts") if hasattr(metadata, "get") else None
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str) and 0 < len(item) <= 200][:3]


@bp.post("/consent")
def consent_decision() -> ResponseReturnValue:
    txn, session = _authenticated_transaction(request.form.get("txn"))
    if not hmac.compare_digest(request.form.get("csrf_token", ""), csrf_token(txn)):
        raise AccessDenied("the form has expired or was tampered with; start again", error="invalid_csrf")
    decision = request.form.get("decision")
    if decision not in ("allow", "deny"):
        raise AccessDenied("choose allow or deny", error="invalid_request")
    try:
        checked = _resume(txn, session)
    except RedirectableError as exc:
        answer(txn, "denied")
        return exc.response()
    refused = assurance.refusal(txn, checked.client, checked.redirect_uri, checked.params.get("state"))
    if refused is not None:
        return refused
    if decision == "deny":
        answer(txn, "denied")
        audit.record(current_db(), "consent.denied", account=txn.account_id, client=txn.client_id)
        return error_redirect(checked.redirect_uri, "access_denied", "the person declined",
                              checked.params.get("state"))
    answer(txn, "completed")  # before anything is recorded: a duplicate submission records nothing
    release = release_for(checked.params, checked.client, checked.claims_request)
    grant_consent(current_db(), account_id=txn.account_id, client_id=txn.client_id, claims=release.all,
                  scopes=consented_scopes(checked.params), purpose=purpose_for(checked.params, checked.client),
                  policy_version=services().policy.version, remember=request.form.get("remember") == "1")
    return _finish(txn, session, checked, lambda code: _keep_code(txn, code))
