"""Conditions of the OpenID Foundation suite, re-implemented (each docstring names the
official condition class it mirrors and the requirement it cites)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from jwcrypto.jwk import JWK

from conformance.client import Client, Landing, Tokens, json_body

if TYPE_CHECKING:
    from conformance.framework import TestRun

ERROR_DESCRIPTION = re.compile(r"[\x09\x0A\x0D\x20-\x21\x23-\x5B\x5D-\x7E]+")
UI_ERRORS = ("login_required", "interaction_required", "consent_required", "account_selection_required")
# AbstractVerifyScopesReturnedInClaims.SCOPE_STANDARD_CLAIMS
SCOPE_STANDARD_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "openid": ("sub",),
    "profile": ("name", "given_name", "family_name", "middle_name", "nickname", "profile", "picture", "website",
                "gender", "birthdate", "zoneinfo", "locale", "updated_at", "preferred_username"),
    "email": ("email", "email_verified"),
    "address": ("address",),
    "phone": ("phone_number", "phone_number_verified"),
    "offline_access": (),
}
# EnsureIdTokenDoesNotContainNonRequestedClaims.idTokenValidClaims
ID_TOKEN_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "at_hash",
                             "c_hash", "nbf", "jti", "sid", "s_hash", "openbanking_intent_id", "txn"})
# OIDC Core §5.1 member types (ValidateUserInfoStandardClaims / ValidateIdTokenStandardClaims)
STRING_CLAIMS = ("sub", "name", "given_name", "family_name", "middle_name", "nickname", "preferred_username",
                 "profile", "picture", "website", "email", "gender", "birthdate", "zoneinfo", "locale", "phone_number")
BOOLEAN_CLAIMS = ("email_verified", "phone_number_verified")
ADDRESS_MEMBERS = ("formatted", "street_address", "locality", "region", "postal_code", "country")
BIRTHDATE = re.compile(r"^(\d{4}|\d{4}-\d{2}-\d{2}|0000-\d{2}-\d{2})$")
# json-schemas/rfc8414/oauth_authorization_server_metadata.json "properties" (CheckForUnexpectedParametersInServerMetadata)
KNOWN_METADATA = frozenset("""
acr_values_supported attachments_supported authorization_challenge_endpoint authorization_details_types_supported
authorization_encryption_alg_values_supported authorization_encryption_enc_values_supported authorization_endpoint
authorization_response_iss_parameter_supported authorization_signing_alg_values_supported
backchannel_authentication_endpoint backchannel_authentication_request_signing_alg_values_supported
backchannel_logout_session_supported backchannel_logout_supported backchannel_token_delivery_modes_supported
backchannel_user_code_parameter_supported challenge_endpoint check_session_iframe claim_types_supported
claims_in_verified_claims_supported claims_locales_supported claims_parameter_supported claims_supported
client_attestation_pop_signing_alg_values_supported client_attestation_signing_alg_values_supported
client_id_metadata_document_supported client_registration_types_supported code_challenge_methods_supported contacts
description device_authorization_endpoint display_name display_values_supported documents_check_methods_supported
documents_methods_supported documents_supported dpop_signing_alg_values_supported electronic_records_supported
end_session_endpoint evidence_supported federation_registration_endpoint frontchannel_logout_session_supported
frontchannel_logout_supported global_token_revocation_endpoint global_token_revocation_endpoint_auth_methods_supported
grant_management_action_required grant_management_actions_supported grant_management_endpoint grant_types_supported
id_token_encryption_alg_values_supported id_token_encryption_enc_values_supported id_token_signing_alg_values_supported
information_uri introspection_encryption_alg_values_supported introspection_encryption_enc_values_supported
introspection_endpoint introspection_endpoint_auth_methods_supported introspection_endpoint_auth_signing_alg_values_supported
introspection_signing_alg_values_supported issuer jwks jwks_uri keywords logo_uri mtls_endpoint_aliases op_policy_uri
op_tos_uri organization_name organization_uri pre-authorized_grant_anonymous_access_supported prompt_values_supported
protected_resources pushed_authorization_request_endpoint registration_endpoint request_authentication_methods_supported
request_authentication_signing_alg_values_supported request_object_encryption_alg_values_supported
request_object_encryption_enc_values_supported request_object_signing_alg_values_supported request_parameter_supported
request_uri_parameter_supported require_pushed_authorization_requests require_request_uri_registration
require_signed_request_object response_modes_supported response_types_supported revocation_endpoint
revocation_endpoint_auth_methods_supported revocation_endpoint_auth_signing_alg_values_supported scopes_supported
service_documentation signed_jwks_uri signed_metadata status_list_aggregation_endpoint subject_types_supported
tls_client_certificate_bound_access_tokens token_endpoint token_endpoint_auth_methods_supported
token_endpoint_auth_signing_alg_values_supported transformed_claims_functions_supported transformed_claims_predefined
trust_frameworks_supported ui_locales_supported userinfo_encryption_alg_values_supported
userinfo_encryption_enc_values_supported userinfo_endpoint userinfo_signing_alg_values_supported
verified_claims_supported""".split())


def loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def secure_url(url: Any, issuer: str) -> bool:
    """CheckDiscEndpointAllEndpointsAreHttps; a loopback http issuer (a development
    deployment, what CI runs) may use loopback http endpoints (README: deviations)."""
    if not isinstance(url, str) or not url:
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return loopback_http(issuer) and loopback_http(url)


# registration -------------------------------------------------------------------------------
def registration_response(run: TestRun, client: Mapping[str, Any], auth: str) -> None:
    """VerifyClientManagementCredentials, VerifyDynamicRegistrationResponseClientCredentials (OIDCR-3.2)."""
    run.require(isinstance(client.get("client_id"), str) and client["client_id"], "no client_id", ref="OIDCR-3.2")
    if auth in ("client_secret_basic", "client_secret_post"):
        run.check(isinstance(client.get("client_secret"), str) and len(client["client_secret"]) >= 16,
                  "no usable client_secret for a secret-based client", ref="OIDCR-3.2")
        run.check(isinstance(client.get("client_secret_expires_at"), int), "client_secret_expires_at missing",
                  ref="OIDCR-3.2")
    run.check(bool(client.get("registration_access_token")) and bool(client.get("registration_client_uri")),
              "registration_access_token / registration_client_uri missing", ref="RFC7592-3")


def registration_error(run: TestRun, response: requests.Response, errors: Iterable[str]) -> None:
    """EnsureContentTypeJson, EnsureHttpStatusCodeIs400, CheckErrorFromDynamicRegistrationEndpoint… (OIDCR-3.3)."""
    run.check(response.headers.get("Content-Type", "").startswith("application/json"),
              "registration error is not JSON", ref="OIDCR-3.3")
    run.require(response.status_code == 400, f"registration answered HTTP {response.status_code}, not 400",
                ref="OIDCR-3.3")
    error = json_body(response).get("error")
    run.check(error in set(errors), f"registration error {error!r}, expected one of {sorted(errors)}", ref="OIDCR-3.3",
              warning=True)


# authorization responses ------------------------------------------------------------------------
def callback(run: TestRun, landing: Landing, request_state: str | None, issuer: str) -> dict[str, str]:
    """The redirect reached the RP (not an IdP page); CheckMatchingCallbackParameters,
    ValidateIssIfPresentInAuthorizationResponse (RFC 9207), CheckStateInAuthorizationResponse."""
    if landing.url is None:
        status = landing.page.status_code if landing.page is not None else "?"
        run.fail(f"the IdP did not redirect back to the RP (HTTP {status})", ref="OIDCC-3.1.2.5")
    params = landing.params
    run.check(params.get("iss") in (None, issuer), f"iss {params.get('iss')!r} in the authorization response",
              ref="OAuth2-iss-2")
    run.check(params.get("state") == request_state, "state in the authorization response does not match",
              ref="OIDCC-3.1.2.5")
    return params


def success(run: TestRun, params: Mapping[str, str]) -> str:
    """CheckIfAuthorizationEndpointError, ExtractAuthorizationCodeFromAuthorizationResponse,
    EnsureMinimumAuthorizationCodeLength/Entropy (RFC 6749 §10.10)."""
    if "error" in params:
        run.fail(f"authorization error {params['error']}: {params.get('error_description', '')}", ref="OIDCC-3.1.2.6")
    code = params.get("code")
    run.require(code, "no code in the authorization response", ref="OIDCC-3.1.2.5")
    run.check(len(code) >= 22, "authorization code shorter than 128 bits of base64", ref="RFC6749-10.10")
    return code


def error_response(run: TestRun, params: Mapping[str, str], expected: Iterable[str] | None = None) -> str:
    """performGenericAuthorizationEndpointErrorResponseValidation (OIDCC-3.1.2.6, RFC6749-4.1.2.1)."""
    error = params.get("error")
    run.require(error, "expected an error response, got a success", ref="OIDCC-3.1.2.6")
    run.check("code" not in params, "an error response carries a code", ref="OIDCC-3.1.2.6")
    unexpected = set(params) - {"error", "error_description", "error_uri", "state", "session_state", "iss",
                                "dummy1", "dummy2"}
    run.check(not unexpected, f"unexpected parameters in the error response: {sorted(unexpected)}",
              ref="OIDCC-3.1.2.6", warning=True)
    description = params.get("error_description")
    if description is not None:
        run.check(bool(ERROR_DESCRIPTION.fullmatch(description)), "error_description has forbidden characters",
                  ref="RFC6749-4.1.2.1")
    if expected is not None:
        run.check(error in set(expected), f"error {error!r}, expected one of {sorted(expected)}", ref="OIDCC-3.1.2.6")
    return str(error)


def error_page(run: TestRun, landing: Landing, what: str, *, ref: str) -> None:
    """The placeholder modules: the OP must show an error page, never redirect."""
    if landing.url is not None:
        run.fail(f"the IdP redirected to {landing.url.split('?')[0]} although {what}", ref=ref)
    page = landing.page
    run.check(page is not None and 400 <= page.status_code < 500,
              f"the error page answered HTTP {page.status_code if page is not None else '?'}, not 4xx", ref=ref)
    run.check(page is not None and page.headers.get("Content-Type", "").startswith("text/html"),
              "the error page is not HTML", ref=ref)


# token endpoint --------------------------------------------------------------------------------
def token_success(run: TestRun, tokens: Tokens, *, expires_in_warning: bool = False) -> None:
    """CheckTokenEndpointHttpStatus200, CheckTokenEndpointReturnedJsonContentType,
    CheckTokenEndpointCacheHeaders, CheckForAccessTokenValue, token_type Bearer, ValidateExpiresIn."""
    response = tokens.response
    if response.status_code != 200:
        run.fail(f"token endpoint answered HTTP {response.status_code}: {response.text[:200]}", ref="RFC6749-5.1")
    run.check(response.headers.get("Content-Type", "").startswith("application/json"), "token response not JSON",
              ref="RFC6749-5.1")
    run.check("no-store" in response.headers.get("Cache-Control", ""), "token response lacks Cache-Control: no-store",
              ref="RFC6749-5.1")
    run.require(tokens.body.get("access_token"), "no access_token", ref="RFC6749-5.1")
    run.check(str(tokens.body.get("token_type", "")).lower() == "bearer", "token_type is not Bearer",
              ref="RFC6749-5.1")
    expires_in = tokens.body.get("expires_in")
    if expires_in is None:
        run.check(False, "no expires_in in the token response", ref="RFC6749-5.1", warning=True)
    else:
        run.check(isinstance(expires_in, int) and expires_in > 0, "expires_in is not a positive integer",
                  ref="RFC6749-5.1")
    if expires_in_warning:
        run.note("expires_in present")


def token_error(run: TestRun, response: requests.Response, expected: str = "invalid_grant") -> None:
    """CheckTokenEndpointHttpStatus400, CheckTokenEndpointReturnedJsonContentType,
    CheckErrorFromTokenEndpointResponseErrorInvalidGrant, ValidateErrorDescription… (RFC 6749 §5.2)."""
    run.check(response.status_code == 400, f"token endpoint answered HTTP {response.status_code}, not 400",
              ref="OIDCC-3.1.3.4")
    run.check(response.headers.get("Content-Type", "").startswith("application/json"), "token error is not JSON",
              ref="OIDCC-3.1.3.4")
    body = json_body(response)
    run.check(body.get("error") == expected, f"token error {body.get('error')!r}, expected {expected}",
              ref="RFC6749-5.2")
    description = body.get("error_description")
    if description is not None:
        run.check(isinstance(description, str) and bool(ERROR_DESCRIPTION.fullmatch(description)),
                  "token error_description has forbidden characters", ref="RFC6749-5.2")


# ID tokens -------------------------------------------------------------------------------------
def standard_claim_types(run: TestRun, claims: Mapping[str, Any], where: str) -> None:
    """ValidateIdTokenStandardClaims / ValidateUserInfoStandardClaims (OIDC Core §5.1)."""
    for name in STRING_CLAIMS:
        if name in claims:
            run.check(isinstance(claims[name], str), f"{where} {name} is not a string", ref="OIDCC-5.1")
    for name in BOOLEAN_CLAIMS:
        if name in claims:
            run.check(isinstance(claims[name], bool), f"{where} {name} is not a boolean", ref="OIDCC-5.1")
    if "birthdate" in claims and isinstance(claims["birthdate"], str):
        run.check(bool(BIRTHDATE.match(claims["birthdate"])), f"{where} birthdate is not YYYY-MM-DD", ref="OIDCC-5.1")
    if "address" in claims:
        address = claims["address"]
        run.check(isinstance(address, dict) and all(isinstance(address.get(k, ""), str) for k in ADDRESS_MEMBERS),
                  f"{where} address is not an address object", ref="OIDCC-5.1.1")
    if "updated_at" in claims:
        run.check(isinstance(claims["updated_at"], (int, float)) and not isinstance(claims["updated_at"], bool),
                  f"{where} updated_at is not a number", ref="OIDCC-5.1")


def id_token(run: TestRun, client: Client, tokens: Tokens, request: Any, *, check_claims: bool = False) -> None:
    """PerformStandardIdTokenChecks (+ EnsureIdTokenContainsKid, and with ``check_claims``
    EnsureIdTokenDoesNotContainNonRequestedClaims, a WARNING in oidcc-server)."""
    client.validate_id_token(run, tokens, request)
    claims = tokens.claims
    run.check(bool(tokens.header.get("kid")), "ID token header has no kid", ref="OIDCC-10.1")
    if request is not None and request.nonce is None:
        run.check("nonce" not in claims, "ID token has a nonce although none was sent", ref="OIDCC-2")
    standard_claim_types(run, claims, "ID token")
    if check_claims and request is not None:
        allowed = set(ID_TOKEN_CLAIMS)
        for scope in request.params.get("scope", "").split():
            allowed |= set(SCOPE_STANDARD_CLAIMS.get(scope, ()))
        extra = set(claims) - allowed
        requested = set(((json.loads(request.params.get("claims", "{}")) or {}).get("id_token") or {}))
        run.check(not (extra - requested), f"ID token contains non-requested claims {sorted(extra - requested)}",
                  warning=True)
        if "name" not in requested:
            run.check("name" not in claims, "ID token contains name although it was not requested in it",
                      ref="OIDCC-5.5", warning=True)


# UserInfo --------------------------------------------------------------------------------------
def userinfo(run: TestRun, client: Client, response: requests.Response, sub: str | None,
             *, signed_alg: str | None = None) -> dict[str, Any]:
    """EnsureHttpStatusCodeIs200, EnsureContentTypeJson (or application/jwt when signed),
    ValidateUserInfoStandardClaims, EnsureUserInfoContainsSub, VerifyUserInfoAndIdTokenInTokenEndpointSameSub."""
    run.require(response.status_code == 200, f"UserInfo answered HTTP {response.status_code}: {response.text[:200]}",
                ref="OIDCC-5.3.2")
    content_type = response.headers.get("Content-Type", "")
    if signed_alg:
        run.require(content_type.startswith("application/jwt"), f"signed UserInfo has Content-Type {content_type}",
                    ref="OIDCC-5.3.2")
        body = _verified_userinfo(run, client, response.text.strip(), signed_alg)
    else:
        run.check(content_type.startswith("application/json"), f"UserInfo Content-Type {content_type}",
                  ref="OIDCC-5.3.2")
        body = json_body(response)
    run.require(isinstance(body.get("sub"), str), "UserInfo has no sub", ref="OIDCC-5.3.2")
    if sub is not None:
        run.check(body["sub"] == sub, "UserInfo sub differs from the ID token's", ref="OIDCC-5.3.2")
    standard_claim_types(run, body, "UserInfo")
    return body


def _verified_userinfo(run: TestRun, client: Client, token: str, alg: str) -> dict[str, Any]:
    """OIDC Core §5.3.2: a signed response is a JWS by the OP with iss and aud."""
    from tests.support.rp import IdTokenError, _verified_payload

    try:
        header, claims = _verified_payload(token, client.rp.jwks(refresh=True), {alg})
    except IdTokenError as exc:
        run.fail(f"signed UserInfo does not verify: {exc}", ref="OIDCC-5.3.2")
    run.check(header.get("alg") == alg, f"signed UserInfo alg {header.get('alg')}, registered {alg}", ref="OIDCC-5.3.2")
    run.check(claims.get("iss") == client.rp.issuer, "signed UserInfo iss is not the issuer", ref="OIDCC-5.3.2")
    aud = claims.get("aud")
    run.check(aud == client.client_id or (isinstance(aud, list) and client.client_id in aud),
              "signed UserInfo aud is not the client", ref="OIDCC-5.3.2")
    return claims


def scope_claims(run: TestRun, body: Mapping[str, Any], scope: str) -> None:
    """VerifyScopesReturnedInUserInfoClaims (a WARNING in the suite, OIDCC-5.4)."""
    expected = {claim for s in scope.split() for claim in SCOPE_STANDARD_CLAIMS.get(s, ())}
    missing = expected - set(body)
    run.check(not missing, f"UserInfo lacks scope claims {sorted(missing)} (not held by this OP)", ref="OIDCC-5.4",
              warning=True)


# JWKS ---------------------------------------------------------------------------------------------
def server_jwks(run: TestRun, jwks: Any) -> list[dict[str, Any]]:
    """FetchServerKeys, CheckServerKeysIsValid, ValidateJwksSequence, CheckForKeyIdInServerJWKs,
    CheckDistinctKeyIdValueInServerJWKs (RFC 7517, OIDC Core §10.1)."""
    run.require(isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and jwks["keys"],
                "jwks_uri did not return a non-empty JWK Set", ref="RFC7517-5")
    keys = [k for k in jwks["keys"] if isinstance(k, dict)]
    for key in keys:
        try:
            JWK(**key)
        except Exception as exc:  # jwcrypto raises several types for bad key material
            run.check(False, f"key {key.get('kid')!r} does not parse: {exc}", ref="RFC7517-4")
        run.check(not ({"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)), f"key {key.get('kid')!r} has private members",
                  ref="RFC7517-1.1")
        run.check(bool(key.get("kid")), "a server key has no kid", ref="OIDCC-10.1")
        run.check(key.get("use", "sig") in ("sig", "enc"), f"key {key.get('kid')!r} has use {key.get('use')!r}",
                  ref="RFC7517-4.2")
    kids = [k.get("kid") for k in keys]
    run.check(len(kids) == len(set(kids)), "kids in the server JWKS are not distinct", ref="RFC7517-4.5")
    return keys
