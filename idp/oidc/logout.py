"""RP-Initiated Logout 1.0 at ``end_session_endpoint``, with Back-Channel Logout 1.0.

§2: ``id_token_hint`` must be an ID token this OP issued (signature and ``iss``; an
expired one is still a good hint); ``client_id``, when also sent, must be its audience.
§3: ``post_logout_redirect_uri`` must match one the client registered, exactly (query
included); ``state`` is passed back unchanged. A request we cannot trust (bad hint, an
unregistered or unidentifiable redirect) gets an error page, never a redirect, and ends
nothing.

§2 also says the OP MUST ask the person before logging out when there is no
``id_token_hint`` or the hint does not belong to the current session: those requests get a
confirmation page (a CSRF-protected form bound to this browser); the logout and the
redirect happen only when the person confirms.

Ending a session sends Logout Tokens to every RP that received a code in it
(:mod:`idp.oidc.backchannel`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping

from authlib.common.urls import add_params_to_uri
from flask import redirect, render_template, request
from flask.typing import ResponseReturnValue
from joserfc import jwt
from joserfc.errors import JoseError

from idp import audit
from idp.clients.registry import RegisteredClient
from idp.context import services
from idp.errors import UnsafeAuthorizationRequest
from idp.oidc import backchannel
from idp.oidc import claims as claims_mod
from idp.oidc.server import query_client
from idp.oidc.session import current_db
from idp.web import browser

HINT_ALGS = ["ES256", "RS256"]


class LogoutRequestError(UnsafeAuthorizationRequest):
    """A logout request we cannot act on: an error page, no redirect, nothing ended."""


@dataclass
class LogoutRequest:
    """The checked parameters of one logout request."""

    client: RegisteredClient | None
    hint: dict[str, Any] | None
    target: str | None
    state: str | None
    ui_locales: str | None


def verify_hint(hint: str | None) -> dict[str, Any] | None:
    """§2: an ID token signed by one of our published keys, with our issuer (expiry ignored)."""
    if not hint:
        return None
    try:
        token = jwt.decode(hint, services().keystore.verification_keys(), algorithms=HINT_ALGS)
    except (JoseError, ValueError, TypeError):
        raise LogoutRequestError("id_token_hint is not an ID token issued here") from None
    if token.claims.get("iss") != services().settings.issuer:
        raise LogoutRequestError("id_token_hint is not an ID token issued here")
    return dict(token.claims)


def _audience(claims: Mapping[str, Any]) -> str | None:
    aud = claims.get("aud")
    if isinstance(aud, list):
        return aud[0] if len(aud) == 1 and isinstance(aud[0], str) else claims.get("azp")
    return aud if isinstance(aud, str) else None


def check(values: Mapping[str, str]) -> LogoutRequest:
    hint = verify_hint(values.get("id_token_hint"))
    hinted = _audience(hint) if hint else None
    client_id = values.get("client_id") or hinted
    if hint is not None and values.get("client_id") and hinted != values.get("client_id"):
        raise LogoutRequestError("client_id does not match id_token_hint")
    client = query_client(client_id) if client_id else None
    if client_id and client is None:
        raise LogoutRequestError("unknown client")
    target = values.get("post_logout_redirect_uri") or None
    if target is not None:
        if client is None:
            raise LogoutRequestError("post_logout_redirect_uri needs id_token_hint or client_id")
        if target not in client.metadata.get("post_logout_redirect_uris", []):
            raise LogoutRequestError("post_logout_redirect_uri is not registered for this client")
    return LogoutRequest(client=client, hint=hint, target=target, state=values.get("state") or None,
                         ui_locales=values.get("ui_locales") or None)


def hint_matches(req: LogoutRequest, session: browser.SessionView) -> bool:
    """The hint names this browser's session (its per-client ``sid``) or at least its person."""
    if req.hint is None or req.client is None:
        return False
    sid = req.hint.get("sid")
    if isinstance(sid, str):
        return hmac.compare_digest(sid, session.client_sid(req.client.client_id))
    sub = claims_mod.subject(session.account_id, req.client.sector, services().pairwise_salt)
    return req.hint.get("sub") == sub


def csrf_token() -> str:
    key = services().secret_key.encode()
    return hmac.new(key, f"logout:{browser.binding_digest()}".encode(), hashlib.sha256).hexdigest()


def end_and_notify(client_id: str | None) -> None:
    """End this browser's session and send back-channel Logout Tokens (if it was active)."""
    active = browser.current_session(scoped=True)
    ended = browser.end_session()
    if active is None or ended is None:
        return
    deliveries = backchannel.deliveries_for(ended)
    audit.record(current_db(), "session.ended", account=ended.account_id, client=client_id,
                 notified=[d.client_id for d in deliveries])
    backchannel.dispatch(deliveries)


def finish(req: LogoutRequest) -> ResponseReturnValue:
    end_and_notify(req.client.client_id if req.client else None)
    if req.target:
        params = [("state", req.state)] if req.state else []
        return redirect(add_params_to_uri(req.target, params), code=302)
    return render_template("logged_out.html")


def handle() -> ResponseReturnValue:
    if request.method == "POST" and "logout_decision" in request.form:
        return confirmed()
    req = check(request.values)
    session = browser.current_session(scoped=True)
    if req.hint is not None and (session is None or hint_matches(req, session)):
        return finish(req)
    if session is None and req.target is None:
        return render_template("logged_out.html")
    return render_template("logout_confirm.html", csrf_token=csrf_token(), client=req.client,
                           post_logout_redirect_uri=req.target or "", state=req.state or "",
                           client_id=req.client.client_id if req.client else "")


def confirmed() -> ResponseReturnValue:
    """The person answered the confirmation page."""
    form = request.form
    if not hmac.compare_digest(form.get("csrf_token", ""), csrf_token()):
        raise LogoutRequestError("the form has expired or was sent from another browser")
    req = check({k: form.get(k, "") for k in ("client_id", "post_logout_redirect_uri", "state")})
    if form.get("logout_decision") != "logout":
        return redirect("/", code=303)
    return finish(req)
