"""Local modules (``jp-…``) for what discovery advertises beyond the oidcc plans, and for the
contract's own rules (PROTOCOL §2, §6): every advertised feature is exercised somewhere."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import requests

from conformance import checks
from conformance.client import Browser, json_body
from conformance.framework import TestRun, module
from conformance.modules.common import EXTRA, authorize, happy_flow, register, tokens_for


@module("jp-token-revocation", plan=EXTRA, official=False)
def token_revocation(run: TestRun) -> None:
    """RFC 7009 §2: revoking the access token ends it at UserInfo; revoking the refresh token
    ends the grant; an unknown token is still 200 (§2.2)."""
    client = register(run, grant_types=["authorization_code", "refresh_token"])
    flow = happy_flow(run, client=client, scope="openid offline_access", prompt="consent")
    response = client.rp.revoke(flow.tokens.access_token, "access_token")
    run.check(response.status_code == 200, f"revocation answered HTTP {response.status_code}", ref="RFC7009-2.2")
    run.check(client.userinfo(flow.tokens.access_token).status_code == 401, "a revoked access token still works",
              ref="RFC7009-2.1")
    run.require(flow.tokens.refresh_token, "no refresh token for offline_access", ref="OIDCC-11")
    client.rp.revoke(flow.tokens.refresh_token or "", "refresh_token")
    checks.token_error(run, client.refresh(flow.tokens.refresh_token or ""), "invalid_grant")
    run.check(client.rp.revoke(secrets.token_urlsafe(32)).status_code == 200,
              "revoking an unknown token is not answered 200", ref="RFC7009-2.2")


@module("jp-token-introspection", plan=EXTRA, official=False)
def token_introspection(run: TestRun) -> None:
    """RFC 7662 §2.2: active with sub/client_id for the owner; another client learns nothing (§4)."""
    flow = happy_flow(run)
    answer = flow.client.rp.introspect(flow.tokens.access_token)
    run.check(answer.get("active") is True, "a fresh access token is not active", ref="RFC7662-2.2")
    run.check(answer.get("sub") == flow.tokens.claims.get("sub"), "introspection sub differs from the ID token's",
              ref="RFC7662-2.2")
    run.check(answer.get("client_id") == flow.client.client_id, "introspection client_id is wrong", ref="RFC7662-2.2")
    other = register(run)
    run.check(other.rp.introspect(flow.tokens.access_token).get("active") is False,
              "another client can introspect this client's token", ref="RFC7662-4")
    flow.client.rp.revoke(flow.tokens.access_token, "access_token")
    run.check(flow.client.rp.introspect(flow.tokens.access_token).get("active") is False,
              "a revoked token is still active", ref="RFC7662-2.2")


@module("jp-client-read", plan=EXTRA, official=False)
def client_read(run: TestRun) -> None:
    """RFC 7592 §2.1: the registration access token reads the client; another token does not."""
    client = register(run, logo_uri=run.env.rp_host.url("/logo.png"))
    uri, token = client.rp.client["registration_client_uri"], client.rp.client["registration_access_token"]
    response = requests.get(uri, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    run.require(response.status_code == 200, f"client read answered HTTP {response.status_code}", ref="RFC7592-2.1")
    body = json_body(response)
    run.check(body.get("client_id") == client.client_id, "client read returned another client_id", ref="RFC7592-3")
    run.check(body.get("redirect_uris") == [client.redirect_uri], "client read lost redirect_uris", ref="RFC7592-3")
    run.check("client_secret" not in body or body["client_secret"] == client.rp.client_secret,
              "client read returned a different secret", ref="RFC7592-3")
    response = requests.get(uri, headers={"Authorization": "Bearer " + secrets.token_urlsafe(32)}, timeout=20)
    run.check(response.status_code == 401, f"a wrong registration token answered HTTP {response.status_code}",
              ref="RFC7592-2")


@module("jp-pushed-authorization-request", plan=EXTRA, official=False)
def pushed_authorization_request(run: TestRun) -> None:
    """RFC 9126: push, then authorize with the one-time request_uri; a second use is refused."""
    client = register(run)
    request = client.auth_request(par=True)
    run.require("request_uri" in request.params, "the RP could not push the request", ref="RFC9126-2.2")
    browser = Browser(run.env)
    params = authorize(run, client, browser, request)
    tokens_for(run, client, request, params)
    replay = browser.go(request.url)
    run.check(replay.url is None, "a used request_uri was accepted again", ref="RFC9126-4")


@module("jp-pkce-required", plan=EXTRA, official=False)
def pkce_required(run: TestRun) -> None:
    """PROTOCOL §6: PKCE S256 for every client; a request without it, or with plain, is refused
    by redirect (invalid_request); a wrong verifier fails at the token endpoint (invalid_grant)."""
    client = register(run)
    browser = Browser(run.env)
    for pkce in (None, "plain"):
        request = client.auth_request(pkce=pkce)
        params = checks.callback(run, browser.go(request.url), request.state, run.env.issuer)
        checks.error_response(run, params, ("invalid_request",))
    request = client.auth_request()
    params = authorize(run, client, browser, request)
    request.pending.code_verifier = secrets.token_urlsafe(48)
    checks.token_error(run, client.exchange(run, params["code"], request).response, "invalid_grant")


@module("jp-refresh-token-rotation", plan=EXTRA, official=False)
def refresh_token_rotation(run: TestRun) -> None:
    """RFC 9700 §4.14.2: a refresh token is single use (rotated); none without offline_access."""
    client = register(run, grant_types=["authorization_code", "refresh_token"])
    plain = happy_flow(run, client=client, userinfo=False)
    run.check(plain.tokens.refresh_token is None, "a refresh token was issued without offline_access", ref="OIDCC-11")
    flow = happy_flow(run, client=client, browser=plain.browser, scope="openid offline_access", prompt="consent",
                      userinfo=False)
    first = flow.tokens.refresh_token
    run.require(first, "no refresh token for offline_access", ref="OIDCC-11")
    response = client.refresh(first or "")
    run.require(response.status_code == 200, f"refresh answered HTTP {response.status_code}", ref="RFC6749-6")
    second = json_body(response).get("refresh_token")
    run.check(bool(second) and second != first, "the refresh token was not rotated", ref="RFC9700-4.14.2")
    checks.token_error(run, client.refresh(first or ""), "invalid_grant")


@module("jp-errors-never-5xx", plan=EXTRA, official=False)
def errors_never_5xx(run: TestRun) -> None:
    """Bad input is never a 5xx: redirectable authorization errors redirect with the OIDC error
    (OIDC Core §3.1.2.6), untrusted clients/redirects get a page, the token endpoint answers
    RFC 6749 §5.2 codes."""
    client = register(run)
    browser = Browser(run.env)
    redirectable = [
        ({"prompt": "bogus"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "-3"}, "invalid_request"),
        ({"claims": "{not json"}, "invalid_request"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"request": "not.a.jwt", "request_uri": "https://x.example/r"}, "invalid_request"),
        ({"request": "e30.e30.x.y.z"}, "invalid_request_object"),
        ({"id_token_hint": "x.y.z"}, "invalid_request"),
    ]
    for extra, expected in redirectable:
        request = client.auth_request()
        request.params.update(extra)
        landing = browser.go(request.url)
        if landing.url is None:
            run.check(False, f"{extra} got a page (HTTP {landing.page.status_code if landing.page else '?'}) "
                             "instead of an error redirect", ref="OIDCC-3.1.2.6")
            continue
        params = checks.callback(run, landing, request.state, run.env.issuer)
        checks.error_response(run, params, (expected,))
    for label, extra, expected in (("a repeated scope", {"scope": "openid"}, "invalid_request"),
                                   ("an oversized nonce", {"nonce": "n" * 5000}, "invalid_request")):
        request = client.auth_request(nonce=False)
        if label == "a repeated scope":
            landing = browser.go(request.url + "&" + urlencode(extra))
        else:  # by POST: a 5 kB query exceeds common request-line limits (gunicorn: 4094 bytes)
            landing = browser.go(request.endpoint, method="POST", data={**request.params, **extra})
        if landing.url is None:
            run.check(False, f"{label} got a page instead of an error redirect", ref="OIDCC-3.1.2.6")
            continue
        checks.error_response(run, checks.callback(run, landing, request.state, run.env.issuer), (expected,))
    endpoint = run.env.provider["authorization_endpoint"]
    for query in ({"client_id": "nobody", "response_type": "code", "scope": "openid"},
                  {"client_id": client.client_id, "response_type": "code", "scope": "openid",
                   "redirect_uri": "https://evil.example/cb"},
                  {"client_id": client.client_id, "response_type": "\"", "scope": "openid", "redirect_uri": "\\"},
                  {"client_id": "x" * 5000}):
        landing = browser.go(f"{endpoint}?{urlencode(query)}")
        checks.error_page(run, landing, f"the request {sorted(query)} cannot be trusted", ref="RFC6749-4.1.2.1")
    token_endpoint = run.env.provider["token_endpoint"]
    cases = [
        (client.token_request({"grant_type": "password", "username": "a", "password": "b"}),
         (400,), "unsupported_grant_type"),
        (client.token_request({"grant_type": "authorization_code"}), (400,), "invalid_request"),
        (client.token_request({"grant_type": "authorization_code", "code": "nope", "redirect_uri": client.redirect_uri,
                               "code_verifier": "x" * 43}), (400,), "invalid_grant"),
        (requests.post(token_endpoint, data={"grant_type": "authorization_code", "code": "x",
                                             "client_id": client.client_id, "client_secret": "wrong"}, timeout=20),
         (400, 401), "invalid_client"),
        (requests.post(token_endpoint, data={"grant_type": '"\\'}, timeout=20), (400, 401), None),
    ]
    for response, statuses, error in cases:
        body = json_body(response)
        run.check(response.status_code in statuses, f"token endpoint answered HTTP {response.status_code} "
                  f"({body.get('error')})", ref="RFC6749-5.2")
        if error:
            run.check(body.get("error") == error, f"token error {body.get('error')!r}, expected {error}",
                      ref="RFC6749-5.2")
        description = body.get("error_description")
        if description is not None:
            run.check(bool(checks.ERROR_DESCRIPTION.fullmatch(description)),
                      "token error_description has forbidden characters", ref="RFC6749-5.2")
