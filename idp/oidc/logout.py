"""RP-Initiated Logout 1.0: end the IdP session, then return to a registered URI.

§2: ``id_token_hint`` identifies the RP (and must be one we issued, expired or not);
``post_logout_redirect_uri`` must match a registered value exactly (§3.1), otherwise
the person stays on our page; ``state`` is passed back.
"""

from __future__ import annotations

from authlib.common.urls import add_params_to_uri
from flask import redirect, render_template, request
from flask.typing import ResponseReturnValue
from joserfc import jwt
from joserfc.errors import JoseError

from idp import audit
from idp.context import services
from idp.errors import InvalidRequest
from idp.oidc.server import query_client
from idp.oidc.session import current_db
from idp.web import browser


def _hint_client_id(hint: str | None) -> str | None:
    if not hint:
        return None
    try:
        token = jwt.decode(hint, services().keystore.verification_keys(), algorithms=["ES256", "RS256"])
    except (JoseError, ValueError):
        raise InvalidRequest("id_token_hint is not an ID token issued here") from None
    if token.claims.get("iss") != services().settings.issuer:
        raise InvalidRequest("id_token_hint is not an ID token issued here")
    aud = token.claims.get("aud")
    return aud[0] if isinstance(aud, list) and aud else aud if isinstance(aud, str) else None


def handle() -> ResponseReturnValue:
    values = request.values
    hinted = _hint_client_id(values.get("id_token_hint"))
    if hinted and values.get("client_id") and hinted != values.get("client_id"):
        raise InvalidRequest("client_id does not match id_token_hint")
    client_id = values.get("client_id") or hinted
    ended = browser.end_session()
    if ended is not None:
        audit.record(current_db(), "session.ended", account=ended.account_id, client=client_id)
    target = values.get("post_logout_redirect_uri")
    client = query_client(client_id) if client_id else None
    if target and client and target in client.metadata.get("post_logout_redirect_uris", []):
        params = [("state", values["state"])] if values.get("state") else []
        return redirect(add_params_to_uri(target, params), code=302)
    return render_template("logged_out.html")
