"""oidcc-dynamic-certification-test-plan (private_key_jwt, dynamic registration), and the
oidcc-refresh-token module both plans run."""

from __future__ import annotations

import secrets

from conformance import checks
from conformance.client import Browser, Client, json_body, registration_request, rsa_key, wait
from conformance.framework import TestRun, module
from conformance.modules.common import (
    BASIC,
    BASIC_VARIANT,
    DYNAMIC,
    DYNAMIC_VARIANT,
    authorize,
    happy_flow,
    protected_resource,
    register,
)

PK = "private_key_jwt"
V = DYNAMIC_VARIANT


@module("oidcc-idtoken-rs256", plan=DYNAMIC, variant=V)
def idtoken_rs256(run: TestRun) -> None:
    flow = happy_flow(run, auth=PK, registration={"id_token_signed_response_alg": "RS256"})
    run.check(flow.tokens.header.get("alg") == "RS256", f"ID token alg {flow.tokens.header.get('alg')}, not RS256",
              ref="OIDCC-3.1.3.7")


@module("oidcc-userinfo-rs256", plan=DYNAMIC, variant=V)
def userinfo_rs256(run: TestRun) -> None:
    """OIDC Core §5.3.2: userinfo_signed_response_alg RS256 → a signed JWT with iss and aud."""
    flow = happy_flow(run, auth=PK, scope="openid profile", registration={"userinfo_signed_response_alg": "RS256"},
                      userinfo=False)
    checks.userinfo(run, flow.client, flow.client.userinfo(flow.tokens.access_token), flow.tokens.claims.get("sub"),
                    signed_alg="RS256")


@module("oidcc-ensure-redirect-uri-in-authorization-request", plan=DYNAMIC, variant=V)
def redirect_uri_required(run: TestRun) -> None:
    """Two registered redirect URIs and none sent: an error page, no redirect (OIDC Core §3.1.2.1)."""
    first = run.env.callback_url(run.spec.name)
    client = register(run, auth=PK, redirect_uri=first, redirect_uris=[first, run.env.callback_url(run.spec.name)])
    request = client.auth_request()
    del request.params["redirect_uri"]
    checks.error_page(run, Browser(run.env).go(request.url), "no redirect_uri was sent", ref="OIDCC-3.1.2.1")


@module("oidcc-redirect-uri-query-OK", plan=DYNAMIC, variant=V)
def redirect_uri_query_ok(run: TestRun) -> None:
    """A registered query component is kept and the callback carries it (CheckMatchingCallbackParameters)."""
    uri = run.env.callback_url(run.spec.name) + "?dummy1=lorem&dummy2=ipsum"
    flow = happy_flow(run, auth=PK, registration={"redirect_uri": uri})
    run.check(flow.params.get("dummy1") == "lorem" and flow.params.get("dummy2") == "ipsum",
              "the callback lost the redirect URI's query", ref="OIDCC-3.1.2.5")


@module("oidcc-redirect-uri-query-mismatch", plan=DYNAMIC, variant=V)
def redirect_uri_query_mismatch(run: TestRun) -> None:
    uri = run.env.callback_url(run.spec.name) + "?dummy1=lorem&dummy2=ipsum"
    client = register(run, auth=PK, redirect_uri=uri)
    request = client.auth_request()
    request.params["redirect_uri"] = uri.split("?")[0] + "?dummy1=foo&dummy2=ipsum"
    checks.error_page(run, Browser(run.env).go(request.url), "the redirect URI's query differs",
                      ref="OIDCC-3.1.2.1")


@module("oidcc-redirect-uri-query-added", plan=DYNAMIC, variant=V)
def redirect_uri_query_added(run: TestRun) -> None:
    client = register(run, auth=PK)
    request = client.auth_request()
    request.params["redirect_uri"] = client.redirect_uri + "?foo=bar"
    checks.error_page(run, Browser(run.env).go(request.url), "a query was added to the redirect URI",
                      ref="OIDCC-3.1.2.1")


@module("oidcc-redirect-uri-regfrag", plan=DYNAMIC, variant=V)
def redirect_uri_regfrag(run: TestRun) -> None:
    """RFC 6749 §3.1.2: a redirect URI with a fragment is refused at registration."""
    uri = run.env.callback_url(run.spec.name) + "#fragment"
    response = registration_request(run.env, run, {"redirect_uris": [uri], "token_endpoint_auth_method": PK,
                                                   "jwks": {"keys": [rsa_key().export_public(as_dict=True)]}})
    checks.registration_error(run, response, ("invalid_redirect_uri", "invalid_client_metadata"))


@module("oidcc-server", plan=DYNAMIC, variant=V)
def server_dynamic(run: TestRun) -> None:
    """OP-Registration-Endpoint / OP-Registration-Dynamic / OP-Registration-jwks."""
    happy_flow(run, auth=PK, check_claims=True)


def _shown(run: TestRun, field: str) -> None:
    """OIDCR-2: the login (or consent) page shows the RP's logo / policy / terms link."""
    value = run.env.rp_host.url(f"/{field}/{secrets.token_hex(4)}" + (".png" if field == "logo_uri" else ".html"))
    client = register(run, auth=PK, **{field: value})
    request = client.auth_request()
    landing, pages = Browser(run.env).pages(request.url)
    run.check(any(value in page for page in pages), f"the login and consent pages do not show {field}",
              ref="OIDCR-2")
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)


@module("oidcc-registration-logo-uri", plan=DYNAMIC, variant=V)
def registration_logo_uri(run: TestRun) -> None:
    _shown(run, "logo_uri")


@module("oidcc-registration-policy-uri", plan=DYNAMIC, variant=V)
def registration_policy_uri(run: TestRun) -> None:
    _shown(run, "policy_uri")


@module("oidcc-registration-tos-uri", plan=DYNAMIC, variant=V)
def registration_tos_uri(run: TestRun) -> None:
    _shown(run, "tos_uri")


@module("oidcc-registration-jwks-uri", plan=DYNAMIC, variant=V)
def registration_jwks_uri(run: TestRun) -> None:
    """The client's keys come from its jwks_uri (fetched by the OP for private_key_jwt)."""
    key = rsa_key()
    path = f"/jwks/{secrets.token_hex(6)}"
    uri = run.env.rp_host.put(path, {"keys": [key.export_public(as_dict=True)]})
    happy_flow(run, auth=PK, registration={"key": key, "jwks_uri": uri})
    fetched = run.env.rp_host.received(path, method="GET")
    run.check(bool(fetched), "the OP never fetched the jwks_uri", ref="OIDCR-2")


def _sector(run: TestRun, *, listed: bool) -> None:
    if "pairwise" not in (run.env.provider.get("subject_types_supported") or []):
        run.warn("subject_types_supported lacks pairwise: the official suite skips this module")
        return
    redirect_uri = run.env.callback_url(run.spec.name)
    path = f"/sector/{secrets.token_hex(6)}/redirect_uris.json"
    document = [redirect_uri] if listed else [run.env.callback_url("elsewhere")]
    sector_uri = run.env.rp_host.put(path, document)
    body = {"redirect_uris": [redirect_uri], "token_endpoint_auth_method": PK, "subject_type": "pairwise",
            "sector_identifier_uri": sector_uri, "jwks": {"keys": [rsa_key().export_public(as_dict=True)]}}
    response = registration_request(run.env, run, body)
    if listed:
        run.check(response.status_code == 201, f"registration answered HTTP {response.status_code}: {response.text[:200]}",
                  ref="OIDCR-5")
        info = json_body(response)
        checks.registration_response(run, info, PK)
        if info.get("registration_client_uri"):
            run.env.rp_host.put(path, document)  # unchanged; the client is deleted as the suite's cleanup does
            run.cleanups.append(lambda r: _delete(r, info))
    else:
        checks.registration_error(run, response, ("invalid_client_metadata",))


def _delete(run: TestRun, info: dict) -> None:
    import requests

    response = requests.delete(info["registration_client_uri"],
                               headers={"Authorization": f"Bearer {info['registration_access_token']}"}, timeout=20)
    run.check(response.status_code == 204, f"unregistering answered HTTP {response.status_code}", ref="RFC7592-2.3",
              warning=True)


@module("oidcc-registration-sector-uri", plan=DYNAMIC, variant=V)
def registration_sector_uri(run: TestRun) -> None:
    _sector(run, listed=True)


@module("oidcc-registration-sector-bad", plan=DYNAMIC, variant=V)
def registration_sector_bad(run: TestRun) -> None:
    _sector(run, listed=False)


@module("oidcc-server-rotate-keys", plan=DYNAMIC, variant="discovery")
def server_rotate_keys(run: TestRun) -> None:
    """OIDC Core §10.1.1: after `idp keys rotate` the JWKS has a new key and still the old ones
    (VerifyNewJwksHasNewSigningKey, VerifyNewJwksStillHasOldSigningKey). Beyond the suite:
    the new key is published before it signs, then signs ID tokens RPs can verify."""
    import requests

    jwks_uri = run.env.provider["jwks_uri"]
    before = checks.server_jwks(run, requests.get(jwks_uri, timeout=20).json())
    if run.env.rotate_keys is None:
        run.warn("cannot trigger a key rotation on this deployment: self-assert it (see README)")
        return
    grace = run.env.options.key_rotation_grace
    run.env.rotate_keys(grace)
    wait(2.5)  # the OP rereads its key index at most every 2 s
    after = checks.server_jwks(run, requests.get(jwks_uri, timeout=20).json())
    old, new = {k["kid"] for k in before}, {k["kid"] for k in after}
    run.require(new - old, "the JWKS has no new key after rotation", ref="OIDCC-10.1.1")
    run.check(old <= new, "old keys vanished from the JWKS at rotation", ref="OIDCC-10.1.1", warning=True)
    wait(max(0.0, grace - 2.5) + 2.5)
    flow = happy_flow(run, registration={"id_token_signed_response_alg": "RS256"})
    run.check(flow.tokens.header.get("kid") in new - old, "ID tokens are not signed with the new key after the grace",
              ref="OIDCC-10.1.1")


def _refresh_steps(run: TestRun, client: Client, refresh_token: str, scope: str) -> dict:
    """RefreshTokenRequestSteps: 200, JSON, no-store, Bearer, a working access token."""
    wait(1)  # WaitForOneSecond: iat values differ
    response = client.refresh(refresh_token, scope)
    run.require(response.status_code == 200, f"refresh answered HTTP {response.status_code}: {response.text[:200]}",
                ref="RFC6749-6")
    run.check(response.headers.get("Content-Type", "").startswith("application/json"), "refresh response not JSON",
              ref="RFC6749-5.1")
    run.check("no-store" in response.headers.get("Cache-Control", ""), "refresh response lacks no-store",
              ref="RFC6749-5.1")
    body = json_body(response)
    run.require(body.get("access_token"), "no access_token in the refresh response", ref="RFC6749-5.1")
    run.check(str(body.get("token_type", "")).lower() == "bearer", "token_type is not Bearer", ref="RFC6749-5.1")
    refreshed = body.get("refresh_token")
    if refreshed is not None:
        run.check(all(0x20 <= ord(c) <= 0x7E for c in refreshed), "refresh token has forbidden characters",
                  ref="RFC6749-A.17")
    response = client.userinfo(body["access_token"])
    run.check(response.status_code == 200, f"UserInfo with the refreshed token answered HTTP {response.status_code}",
              ref="OIDCC-5.3.1")
    return body


def _refresh_client(run: TestRun, auth: str, **metadata: object) -> tuple[Client, str, str]:
    scope = "openid offline_access" if "offline_access" in (run.env.provider.get("scopes_supported") or []) \
        else "openid"
    client = register(run, auth=auth, grant_types=["authorization_code", "refresh_token"], **metadata)
    flow = happy_flow(run, client=client, scope=scope, prompt="consent")
    refresh_token = flow.tokens.refresh_token
    if not refresh_token:
        run.warn("no refresh token was issued: the official suite skips this module")
        return client, "", scope
    run.check(all(0x20 <= ord(c) <= 0x7E for c in refresh_token), "refresh token has forbidden characters",
              ref="RFC6749-A.17")
    run.check("refresh_token" in (run.env.provider.get("grant_types_supported") or []),
              "grant_types_supported lacks refresh_token", ref="OIDCD-3", warning=True)
    return client, refresh_token, scope


def _refresh_token(run: TestRun, auth: str) -> None:
    """Refresh works for its client (scope offline_access, prompt=consent) and is bound to it:
    client 1 cannot use client 2's refresh token (invalid_grant)."""
    client1, token1, scope = _refresh_client(run, auth)
    if not token1:
        return
    _refresh_steps(run, client1, token1, scope)
    client2, token2, _ = _refresh_client(run, auth)
    if not token2:
        return
    checks.token_error(run, client1.refresh(token2, scope), "invalid_grant")


@module("oidcc-refresh-token", plan=BASIC, variant=BASIC_VARIANT)
def refresh_token_basic(run: TestRun) -> None:
    _refresh_token(run, "client_secret_basic")


@module("oidcc-refresh-token", plan=DYNAMIC, variant=V)
def refresh_token_dynamic(run: TestRun) -> None:
    _refresh_token(run, PK)


@module("oidcc-refresh-token-rp-key-rotation", plan=DYNAMIC, variant=V)
def refresh_token_rp_key_rotation(run: TestRun) -> None:
    """OIDC Core §10.1.1: the RP puts a new key (new kid) in its jwks_uri; the OP refetches it
    when a client assertion names the unknown kid."""
    key = rsa_key()
    path = f"/jwks/{secrets.token_hex(6)}"
    uri = run.env.rp_host.put(path, {"keys": [key.export_public(as_dict=True)]})
    client, token, scope = _refresh_client(run, PK, key=key, jwks_uri=uri)
    if not token:
        return
    new_key = rsa_key()
    run.env.rp_host.put(path, {"keys": [new_key.export_public(as_dict=True)]})
    client.rp.signing_key = new_key
    wait(run.env.options.jwks_refresh_wait)  # WaitForJWKSRefreshDelay
    _refresh_steps(run, client, token, scope)


@module("oidcc-ensure-client-assertion-with-iss-aud-succeeds", plan=DYNAMIC, variant=V)
def client_assertion_iss_aud(run: TestRun) -> None:
    """OIDC Core §9: a client assertion whose aud is the issuer is accepted (a WARNING if not)."""
    client = register(run, auth=PK)
    client.rp.assertion_audience = "issuer"
    request = client.auth_request()
    params = authorize(run, client, Browser(run.env), request)
    tokens = client.exchange(run, params["code"], request)
    if tokens.response.status_code != 200:
        run.warn(f"a client assertion with aud=issuer was refused (HTTP {tokens.response.status_code})",
                 ref="OIDCC-9")
        return
    checks.token_success(run, tokens)
    checks.id_token(run, client, tokens, request)
    protected_resource(run, client, tokens)


