"""An OpenAPI 3.1 description of the IdP's JSON endpoints, served at ``/openapi.json``.

It documents, for wallet and RP developers, the enrolment, login and account calls a
wallet makes and the OAuth/OIDC endpoints an RP calls (registration, PAR, token,
revocation, introspection, UserInfo); it also drives the generated-input fuzz run
(``make fuzz``), which checks that no input, however malformed, gets a 5xx.

Browser pages (``/authorize``, ``/login``, ``/consent``, ``/account``) are not in it:
they answer HTML.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from idp.context import services

bp = Blueprint("openapi", __name__)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {FORM: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


ERRORS = {
    "400": _answer("The request is malformed or refused", _ref("Error")),
    "401": _answer("Authentication is missing or wrong", _ref("Error")),
    "403": _answer("Not allowed for this caller", _ref("Error")),
    "404": _answer("Unknown transaction, enrolment or client", _ref("Error")),
    "409": _answer("Already answered", _ref("Error")),
    "413": _answer("The body is too large", _ref("Error")),
    "415": _answer("Not a JSON or form body", _ref("Error")),
    "423": _answer("The credential is locked after repeated failures", _ref("Error")),
    "429": _answer("Too many requests from this address; see Retry-After", _ref("Error")),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


def _operation(summary: str, description: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
               security: list[dict[str, list[str]]] | None = None, parameters: list[dict[str, Any]] | None = None,
               tag: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "description": description, "tags": [tag],
                                 "responses": responses}
    if body is not None:
        operation["requestBody"] = body
    if security is not None:
        operation["security"] = security
    if parameters:
        operation["parameters"] = parameters
    return operation


B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "maxLength": 16384}
TXN = {"type": "object", "required": ["txn"], "properties": {"txn": {"type": "string", "maxLength": 64}}}
CLIENT_AUTH = {
    "client_id": {"type": "string", "maxLength": 64},
    "client_secret": {"type": "string", "maxLength": 128},
    "client_assertion_type": {"type": "string", "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
    "client_assertion": {"type": "string", "maxLength": 8192, "description": "private_key_jwt (OIDC Core §9)"},
}
AUTHORIZATION_REQUEST = {
    "response_type": {"type": "string", "const": "code"},
    "redirect_uri": {"type": "string", "format": "uri"},
    "scope": {"type": "string", "examples": ["openid profile address"]},
    "state": {"type": "string"}, "nonce": {"type": "string"},
    "code_challenge": {"type": "string", "minLength": 43, "maxLength": 128},
    "code_challenge_method": {"type": "string", "const": "S256"},
    "prompt": {"type": "string"}, "max_age": {"type": "string", "pattern": "^[0-9]+$"},
    "ui_locales": {"type": "string"}, "acr_values": {"type": "string"},
    "claims": {"type": "string", "description": "OIDC Core §5.5 claims request, as JSON text"},
    "purpose": {"type": "string", "maxLength": 300},
    "request": {"type": "string", "description": "a request object (OIDC Core §6.1)"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "error_description"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "RegistrationCredential": {
        "description": "A WebAuthn registration credential as JSON (WebAuthn L3 §5.1, toJSON()).",
        "type": "object", "required": ["id", "rawId", "type", "response"],
        "properties": {
            "id": B64URL, "rawId": B64URL, "type": {"type": "string", "const": "public-key"},
            "response": {"type": "object", "required": ["clientDataJSON", "attestationObject"],
                         "properties": {"clientDataJSON": B64URL, "attestationObject": B64URL,
                                        "transports": {"type": "array", "items": {"type": "string"}}}},
            "authenticatorAttachment": {"type": "string"},
        },
    },
    "AssertionCredential": {
        "description": "A WebAuthn assertion as JSON (WebAuthn L3 §5.1, toJSON()).",
        "type": "object", "required": ["id", "rawId", "type", "response"],
        "properties": {
            "id": B64URL, "rawId": B64URL, "type": {"type": "string", "const": "public-key"},
            "response": {"type": "object", "required": ["clientDataJSON", "authenticatorData", "signature"],
                         "properties": {"clientDataJSON": B64URL, "authenticatorData": B64URL, "signature": B64URL,
                                        "userHandle": {"type": ["string", "null"]}}},
        },
    },
    "JpkiSignature": {
        "description": "The My Number Card's JPKI signing certificate and its signature over the "
                       "enrolment challenge and the new device key, base64 (standard alphabet).",
        "type": "object", "required": ["certificate", "signature"],
        "properties": {"certificate": {"type": "string", "maxLength": 16384},
                       "signature": {"type": "string", "maxLength": 4096},
                       "chain": {"type": "array", "items": {"type": "string", "maxLength": 16384}}},
    },
    "ClientMetadata": {
        "description": "OIDC Dynamic Client Registration 1.0 §2 metadata, with rp_category.",
        "type": "object", "required": ["redirect_uris"],
        "properties": {
            "rp_category": {"type": "string", "enum": ["municipal", "medical", "financial", "transport"]},
            "redirect_uris": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "uri"}},
            "client_name": {"type": "string", "maxLength": 300}, "purpose": {"type": "string", "maxLength": 300},
            "application_type": {"type": "string", "enum": ["web", "native"]},
            "token_endpoint_auth_method": {"type": "string"},
            "grant_types": {"type": "array", "items": {"type": "string"}},
            "response_types": {"type": "array", "items": {"type": "string"}},
            "scope": {"type": "string"},
            "jwks": {"type": "object"}, "jwks_uri": {"type": "string", "format": "uri"},
            "sector_identifier_uri": {"type": "string", "format": "uri"},
            "request_uris": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "post_logout_redirect_uris": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "backchannel_logout_uri": {"type": "string", "format": "uri"},
            "id_token_signed_response_alg": {"type": "string"},
            "request_object_signing_alg": {"type": "string"},
            "default_max_age": {"type": "integer", "minimum": 0},
            "software_statement": {"type": "string"},
        },
    },
    "TokenResponse": {
        "type": "object", "required": ["access_token", "token_type"],
        "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string"},
                       "expires_in": {"type": "integer"}, "id_token": {"type": "string"},
                       "refresh_token": {"type": "string"}, "scope": {"type": "string"}},
    },
}


def _paths() -> dict[str, Any]:
    wallet, rp = "Wallet", "Relying party"
    bearer = [{"bearer": []}]
    client_auth = [{"client_secret_basic": []}, {}]
    return {
        "/enroll/begin": {"post": _operation(
            "Begin enrolment", "WebAuthn creation options and an enrolment id (single use).",
            {"200": _answer("Creation options", {"type": "object"}), **_errors("400", "429")},
            body=_json_body({"type": "object"}, required=False), tag=wallet)},
        "/enroll/finish": {"post": _operation(
            "Finish enrolment", "The new device key and the card's JPKI signature; the trust service "
                                "issues a pending device certificate.",
            {"200": _answer("The pending certificate and its activation challenge", {"type": "object"}),
             **_errors("400", "403", "404", "409", "429")},
            body=_json_body({"type": "object", "required": ["enrollment_id", "credential", "jpki"], "properties": {
                "enrollment_id": {"type": "string", "maxLength": 64},
                "credential": _ref("RegistrationCredential"), "jpki": _ref("JpkiSignature"),
                "renewal": {"type": "object"}, "model_hint": {"type": "string", "maxLength": 120}}}),
            tag=wallet)},
        "/enroll/activate": {"post": _operation(
            "Activate the device certificate", "An assertion over the activation challenge.",
            {"200": _answer("The active certificate", {"type": "object"}), **_errors("400", "403", "404", "429")},
            body=_json_body({"type": "object", "required": ["enrollment_id", "credential"], "properties": {
                "enrollment_id": {"type": "string", "maxLength": 64},
                "credential": _ref("AssertionCredential")}}), tag=wallet)},
        "/login/options": {"post": _operation(
            "Sign-in options for a transaction", "WebAuthn request options, who asks (RP name, category, "
                                                 "claims, purpose), when it was requested, and the "
                                                 "confirmation code.",
            {"200": _answer("Request options", {"type": "object"}), **_errors("400", "404", "429")},
            body=_json_body(TXN), tag=wallet)},
        "/login/assertion": {"post": _operation(
            "Approve a transaction", "The device's assertion over the transaction challenge (single use).",
            {"200": _answer("Authenticated; where the browser goes next", {"type": "object"}),
             **_errors("400", "403", "404", "423", "429")},
            body=_json_body({"type": "object", "required": ["txn", "credential"], "properties": {
                "txn": {"type": "string", "maxLength": 64}, "credential": _ref("AssertionCredential")}}),
            tag=wallet)},
        "/login/status": {"get": _operation(
            "Follow a transaction", "For the browser that opened it: pending, failed, expired or authenticated.",
            {"200": _answer("Status", {"type": "object"}), **_errors("400", "403", "404")},
            parameters=[{"name": "txn", "in": "query", "required": True, "schema": {"type": "string"}}],
            tag=wallet)},
        "/login/extend": {"post": _operation(
            "More time for a pending sign-in", "For the browser that opened it.",
            {"200": _answer("New expiry", {"type": "object"}), **_errors("400", "403", "404")},
            body=_json_body(TXN), tag=wallet)},
        "/account/login/options": {"post": _operation(
            "Account sign-in options", "WebAuthn request options for the account pages (same device).",
            {"200": _answer("Request options", {"type": "object"}), **_errors("400", "429")},
            body=_json_body({"type": "object"}, required=False), tag=wallet)},
        "/account/login/assertion": {"post": _operation(
            "Account sign-in", "An assertion over the account sign-in challenge.",
            {"200": _answer("Signed in", {"type": "object"}), **_errors("400", "403", "404", "423", "429")},
            body=_json_body({"type": "object", "required": ["state", "credential"], "properties": {
                "state": {"type": "string", "maxLength": 512}, "credential": _ref("AssertionCredential")}}),
            tag=wallet)},
        "/register": {"post": _operation(
            "Register a client", "OIDC Dynamic Client Registration 1.0 §3.",
            {"201": _answer("The registered client", {"type": "object"}), **_errors("400", "401")},
            body=_json_body(_ref("ClientMetadata")), security=[{"bearer": []}, {}], tag=rp)},
        "/register/{client_id}": {
            "parameters": [{"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _operation("Read a client", "RFC 7592 §2.1, with the registration access token.",
                              {"200": _answer("The client", {"type": "object"}), **_errors("401")},
                              security=bearer, tag=rp),
            "delete": _operation("Delete a client", "RFC 7592 §2.3.", {"204": _answer("Deleted"), **_errors("401")},
                                 security=bearer, tag=rp)},
        "/par": {"post": _operation(
            "Push an authorization request", "RFC 9126 §2.",
            {"201": _answer("The request_uri", {"type": "object", "required": ["request_uri", "expires_in"],
                                                "properties": {"request_uri": {"type": "string"},
                                                               "expires_in": {"type": "integer"}}}),
             **_errors("400", "401", "429")},
            body=_form_body({"type": "object", "properties": {**CLIENT_AUTH, **AUTHORIZATION_REQUEST}}),
            security=client_auth, tag=rp)},
        "/token": {"post": _operation(
            "Token endpoint", "RFC 6749 §4.1.3 and §6 (authorization_code with PKCE, refresh_token).",
            {"200": _answer("Tokens", _ref("TokenResponse")), **_errors("400", "401")},
            body=_form_body({"type": "object", "required": ["grant_type"], "properties": {
                **CLIENT_AUTH, "grant_type": {"type": "string", "enum": ["authorization_code", "refresh_token"]},
                "code": {"type": "string"}, "redirect_uri": {"type": "string"},
                "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128},
                "refresh_token": {"type": "string"}, "scope": {"type": "string"}}}),
            security=client_auth, tag=rp)},
        "/revoke": {"post": _operation(
            "Revoke a token", "RFC 7009 §2.1.", {"200": _answer("Revoked (or unknown)"), **_errors("400", "401")},
            body=_form_body({"type": "object", "required": ["token"], "properties": {
                **CLIENT_AUTH, "token": {"type": "string"},
                "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]}}}),
            security=client_auth, tag=rp)},
        "/introspect": {"post": _operation(
            "Introspect a token", "RFC 7662 §2.",
            {"200": _answer("Token state", {"type": "object", "required": ["active"],
                                            "properties": {"active": {"type": "boolean"}}}),
             **_errors("400", "401")},
            body=_form_body({"type": "object", "required": ["token"], "properties": {
                **CLIENT_AUTH, "token": {"type": "string"}, "token_type_hint": {"type": "string"}}}),
            security=client_auth, tag=rp)},
        "/userinfo": {"get": _operation(
            "UserInfo", "OIDC Core §5.3, with the access token (RFC 6750 §2.1).",
            {"200": _answer("Claims", {"type": "object", "required": ["sub"]}), **_errors("400", "401", "403")},
            security=bearer, tag=rp)},
        "/.well-known/openid-configuration": {"get": _operation(
            "Discovery", "OIDC Discovery 1.0 §4.", {"200": _answer("Provider metadata", {"type": "object"})},
            tag=rp)},
        "/jwks": {"get": _operation(
            "Signing keys", "The JWK Set that verifies ID tokens (RFC 7517 §5).",
            {"200": _answer("JWK Set", {"type": "object", "required": ["keys"]})}, tag=rp)},
    }


def document(issuer: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "JP Digital ID OpenID Provider", "version": "1",
                 "description": "The JSON endpoints of the identity provider: what a wallet app calls to "
                                "enrol a phone and approve sign-ins, and what a relying party calls. Every "
                                "error is a JSON object with error and error_description."},
        "servers": [{"url": issuer}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "client_secret_basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    response = jsonify(document(services().settings.issuer))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
