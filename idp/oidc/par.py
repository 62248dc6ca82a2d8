"""Pushed authorization requests (RFC 9126).

The client pushes its parameters over an authenticated back channel (§2.1) and gets a
one-time ``request_uri`` (§2.2) to send through the browser. Parameters then come only
from the pushed request (§4); a pushed request is marked so the category policy can
require it (PROTOCOL §5, financial). A pushed ``request`` object is verified and merged
when it is pushed (§3), so only plain parameters are stored. A DPoP proof sent with the
push binds the future code to the proof key (RFC 9449 §10.1).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from idp.clients.registry import digest
from idp.errors import InvalidRequest, ProtocolError, UnsafeAuthorizationRequest
from idp.oidc.session import current_db
from idp.storage.models import ParRequest, utcnow
from idp.storage.single_use import compare_and_set

PREFIX = "urn:ietf:params:oauth:request_uri:"
LIFETIME_SECONDS = 60
PUSHED_MARK = "_pushed"
CLIENT_AUTH_PARAMS = ("client_assertion", "client_assertion_type", "client_secret")


def take_pushed_request(params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The parameters to process and whether they were pushed; a PAR ``request_uri`` is single use."""
    params = {k: v for k, v in params.items() if k != PUSHED_MARK}
    request_uri = params.get("request_uri")
    if not isinstance(request_uri, str) or not request_uri.startswith(PREFIX):
        return params, False
    key, session = digest(request_uri), current_db()
    if not compare_and_set(session, ParRequest, ParRequest.request_uri_hash == key, ParRequest.used.is_(False),
                           ParRequest.expires_at > utcnow(), ParRequest.client_id == params.get("client_id"),
                           used=True):
        raise UnsafeAuthorizationRequest("the request_uri is unknown, used or expired")
    return dict(session.get(ParRequest, key).params), True


def bind_pushed_request(params: dict[str, Any], client: Any) -> None:
    """RFC 9449 §10.1: a DPoP proof at PAR binds the code to its key, like ``dpop_jkt``; with
    both, they must name the same key."""
    from idp.context import services
    from idp.oidc import dpop

    try:
        proof = dpop.proof_of_request("/par", require_nonce=services().policy[client.category].dpop_nonce)
    except dpop.DPoPError as exc:
        raise ProtocolError(exc.description, error=exc.error) from None
    if proof is None:
        return
    if "dpop_jkt" in params and params["dpop_jkt"] != proof.jkt:
        raise ProtocolError("dpop_jkt differs from the DPoP proof key", error="invalid_dpop_proof")
    params["dpop_jkt"] = proof.jkt


def push() -> ResponseReturnValue:
    """RFC 9126 §2: authenticate the client, validate like /authorize, store, answer 201."""
    from idp.oidc.authorize import RedirectableError, validate
    from idp.oidc.server import AuthorizationCodeGrant

    server = current_app.extensions["idp.oauth"]
    try:
        client = server.authenticate_client(server.create_oauth2_request(None),
                                            AuthorizationCodeGrant.TOKEN_ENDPOINT_AUTH_METHODS, "par")
    except InsecureTransportError:
        raise  # plain http from an untrusted proxy: a request error (idp.errors), not a client's fault
    except OAuth2Error as exc:
        raise ProtocolError(exc.get_error_description() or "client authentication failed",
                            error="invalid_client", status=401) from None
    params = {k: v for k, v in request.form.items() if k not in CLIENT_AUTH_PARAMS and k != PUSHED_MARK}
    if "request_uri" in params:
        raise InvalidRequest("request_uri must not be pushed (RFC 9126 §2.1)")
    if params.setdefault("client_id", client.client_id) != client.client_id:
        raise InvalidRequest("client_id does not match the authenticated client")
    bind_pushed_request(params, client)
    if "request" in params:  # RFC 9126 §3: a request object may be pushed
        from idp.oidc import request_object

        try:
            params = request_object.resolve(params, client)
        except request_object.RequestObjectError as exc:
            raise ProtocolError(exc.description, error=exc.error) from None
    try:
        validate(params, None, None, pushed=True)
    except RedirectableError as exc:
        raise ProtocolError(exc.description, error=exc.error) from None
    except UnsafeAuthorizationRequest as exc:
        raise InvalidRequest(exc.description) from None
    request_uri = PREFIX + secrets.token_urlsafe(32)
    current_db().add(ParRequest(request_uri_hash=digest(request_uri), client_id=client.client_id,
                                params=params, expires_at=utcnow() + timedelta(seconds=LIFETIME_SECONDS)))
    response = jsonify({"request_uri": request_uri, "expires_in": LIFETIME_SECONDS})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response
