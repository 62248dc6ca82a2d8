"""Thin HTTP endpoints of the OpenID Provider; the logic lives in the modules they call."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from joserfc import jwt

from idp import audit
from idp.clients import cache as client_cache
from idp.clients import onboarding
from idp.clients.registry import (
    RegisteredClient,
    client_information,
    create_client,
    digest,
    validate_metadata,
)
from idp.context import services
from idp.errors import InvalidRequest, ProtocolError, Unauthorized
from idp.oidc import authorize as authorize_mod
from idp.oidc import claims as claims_mod
from idp.oidc import discovery, dpop, par
from idp.oidc.server import bearer_grant, query_client
from idp.oidc.session import current_db
from idp.consent import record_disclosure
from idp.storage.models import Client
from idp.web.base64 import json_body

bp = Blueprint("oidc", __name__)


def _server():  # type: ignore[no-untyped-def]
    return current_app.extensions["idp.oauth"]


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> ResponseReturnValue:
    """Serialised once per process: the metadata follows from settings and policy alone."""
    svc = services()
    key = (id(svc.settings), id(svc.policy))
    cached = current_app.extensions.get("idp.discovery")
    if cached is None or cached[0] != key:
        cached = current_app.extensions["idp.discovery"] = (key, json.dumps(discovery.metadata()).encode())
    return Response(cached[1], mimetype="application/json")


@bp.get("/jwks")
def jwks() -> ResponseReturnValue:
    """Serialised once per key schedule version (idp/keystore.py), never per request."""
    response = Response(services().keystore.jwks_document(), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> ResponseReturnValue:
    return client_cache.answer_with_cached_clients(authorize_mod.handle)


@bp.post("/token")
def token() -> ResponseReturnValue:
    server = _server()
    if request.form.get("grant_type") == "authorization_code":  # its code's spending confirms a kept client
        return _no_store(client_cache.answer_with_cached_clients(server.create_token_response))
    return _no_store(server.create_token_response())


@bp.post("/par")
def pushed_authorization_request() -> ResponseReturnValue:
    return par.push()


DPOP_ENDPOINTS = frozenset({"oidc.token", "oidc.pushed_authorization_request", "oidc.userinfo"})


@bp.after_request
def _dpop_nonce(response: Response) -> Response:
    """RFC 9449 §8.2, §9: answers of the endpoints taking proofs, errors included, carry the
    current server nonce for the client's next proof."""
    if request.endpoint in DPOP_ENDPOINTS:
        response.headers["DPoP-Nonce"] = dpop.fresh_nonce()
    return response


@bp.post("/revoke")
def revoke() -> ResponseReturnValue:
    return _server().create_endpoint_response("revocation")


@bp.post("/introspect")
def introspect() -> ResponseReturnValue:
    return _no_store(_server().create_endpoint_response("introspection"))


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> ResponseReturnValue:
    """OIDC Core §5.3: a bearer token in the header (RFC 6750 §2.1) or the form body (§2.2), or
    a DPoP-bound token as ``Authorization: DPoP`` with a proof of this request (RFC 9449 §7)."""
    scheme, token_string = _access_token()
    grant = bearer_grant(token_string)
    challenge = resource_challenge(scheme)
    if grant is None:
        raise Unauthorized("the access token is invalid, expired or revoked",
                           headers={"WWW-Authenticate": f'{challenge} error="invalid_token"'})
    row, account = grant.token, grant.account
    client = query_client(row.client_id)
    session = current_db()
    if client is None or not grant.consent_active:
        raise Unauthorized("the grant behind this token has ended",
                           headers={"WWW-Authenticate": f'{challenge} error="invalid_token"'})
    check_sender(scheme, token_string, row.dpop_jkt, services().policy[client.category].dpop_nonce)
    if "openid" not in row.scope.split():
        raise ProtocolError("the token was not issued for openid", error="insufficient_scope", status=403,
                            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    release = claims_mod.plan_release(row.scope, row.claims, services().policy[client.category])
    values = claims_mod.release_values(account, release.userinfo, claims_request=row.claims, channel="userinfo",
                                       sector=client.sector, salt=services().pairwise_salt)
    record_disclosure(session, account.id, client.client_id, sorted(values), "userinfo")
    body: dict[str, Any] = {"sub": claims_mod.subject(account.id, client.sector, services().pairwise_salt),
                            **values}
    alg = client.metadata.get("userinfo_signed_response_alg")
    if alg:
        return _no_store(_signed_userinfo(body, client, alg))
    return _no_store(jsonify(body))


def _signed_userinfo(body: dict[str, Any], client: RegisteredClient, alg: str) -> Response:
    """OIDC Core §5.3.2: a signed response carries iss and aud."""
    entry = services().keystore.signing_key(alg)
    now = int(time.time())
    payload = {**body, "iss": services().settings.issuer, "aud": client.client_id, "iat": now}
    token = jwt.encode({"alg": entry.alg, "kid": entry.kid}, payload, entry.key, algorithms=[entry.alg])
    return Response(token, content_type="application/jwt")


def _access_token() -> tuple[str, str]:
    """The authentication scheme (``Bearer`` or ``DPoP``) and the access token."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower(), "")
    from_header = value.strip() if scheme else None
    from_body = request.form.get("access_token") if request.method == "POST" and request.mimetype == \
        "application/x-www-form-urlencoded" else None
    if from_header and from_body:
        raise InvalidRequest("send the access token once (RFC 6750 §2)")
    if from_header:
        return scheme, from_header
    if not from_body:
        raise Unauthorized("an access token is required", headers={
            "WWW-Authenticate": f'Bearer realm="userinfo", DPoP algs="{" ".join(dpop.SIGNING_ALGS)}"'})
    return "Bearer", from_body


def resource_challenge(scheme: str) -> str:
    """RFC 9449 §7.1: a DPoP request is answered with a DPoP challenge, naming the algorithms."""
    return f'DPoP algs="{" ".join(dpop.SIGNING_ALGS)}",' if scheme == "DPoP" else "Bearer"


def check_sender(scheme: str, access_token: str, jkt: str | None, require_nonce: bool) -> None:
    """RFC 9449 §7: a DPoP-bound token only with the DPoP scheme and a proof by its key
    (``htm``, ``htu``, ``ath``); never as a bearer token (§7.2). A bearer token stays a bearer
    token: presented as DPoP it is refused, so a client cannot confuse the two."""
    if jkt is None:
        if scheme == "DPoP":
            raise Unauthorized("this access token is not DPoP-bound", headers={
                "WWW-Authenticate": f'{resource_challenge(scheme)} error="invalid_token"'})
        return
    if scheme != "DPoP":
        raise Unauthorized("a DPoP-bound access token must be sent with the DPoP scheme and a proof",
                           headers={"WWW-Authenticate":
                                    f'{resource_challenge("DPoP")} error="invalid_token"'})
    try:
        proof = dpop.proof_of_request("/userinfo", access_token=access_token, require_nonce=require_nonce)
    except dpop.DPoPError as exc:
        headers = {"WWW-Authenticate": f'{resource_challenge("DPoP")} error="{exc.error}"'}
        raise Unauthorized(exc.description, error=exc.error, headers=headers) from None
    if proof is None or not hmac.compare_digest(proof.jkt, jkt):
        raise Unauthorized("the DPoP proof is missing or made with another key", error="invalid_dpop_proof",
                           headers={"WWW-Authenticate": f'{resource_challenge("DPoP")} error="invalid_dpop_proof"'})


@bp.post("/register")
def register() -> ResponseReturnValue:
    """OIDC Dynamic Client Registration 1.0 §3 / RFC 7591 §3, admitted as PROTOCOL §7.1 says
    (initial access token, software statement or master token; open only in development)."""
    svc = services()
    settings = svc.settings
    session = current_db()
    admission = onboarding.admit(session, settings, svc.authority_keys,
                                 request.headers.get("Authorization", ""), json_body())
    meta = validate_metadata(admission.body, policy=svc.policy, allow_http_loopback=settings.allow_http_loopback)
    if "software_statement" in admission.body:
        meta["software_statement"] = admission.body["software_statement"]  # RFC 7591 §3.2.1: echoed unmodified
    row, issued = create_client(session, meta)
    audit.record(session, "client.registered", client=row.client_id, category=row.rp_category, via=admission.via)
    info = client_information(row, settings.url(f"/register/{row.client_id}"))
    info.update(issued)
    response = jsonify(info)
    response.status_code = 201
    return _no_store(response)


@bp.get("/register/<client_id>")
def read_client(client_id: str) -> ResponseReturnValue:
    """RFC 7592 §2.1: read with the registration access token."""
    row = _registered_row(client_id)
    return _no_store(jsonify(client_information(row, services().settings.url(f"/register/{row.client_id}"))))


@bp.delete("/register/<client_id>")
def delete_client(client_id: str) -> ResponseReturnValue:
    """RFC 7592 §2.3: delete with the registration access token; 204 No Content."""
    from idp.clients.registry import delete_client as delete

    row = _registered_row(client_id)
    delete(current_db(), row)
    audit.record(current_db(), "client.deleted", client=row.client_id)
    return Response(status=204, headers={"Cache-Control": "no-store"})


def _registered_row(client_id: str) -> Client:
    """The client named in the path, authenticated by its registration access token (RFC 7592 §2)."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    row = current_db().get(Client, client_id) if len(client_id) <= 64 else None
    if (not token or row is None or not row.registration_access_token_hash
            or not hmac.compare_digest(row.registration_access_token_hash, digest(token))):
        raise Unauthorized("invalid registration access token",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return row


@bp.route("/logout", methods=["GET", "POST"])
def end_session() -> ResponseReturnValue:
    from idp.oidc.logout import handle

    return handle()

