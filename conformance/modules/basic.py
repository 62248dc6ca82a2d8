"""oidcc-basic-certification-test-plan (response_type=code, client_secret_basic), in the plan's order."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from conformance import checks
from conformance.client import Browser, wait
from conformance.framework import TestRun, module
from conformance.modules.common import (
    BASIC,
    BASIC_VARIANT,
    authorize,
    happy_flow,
    login_shown,
    protected_resource,
    register,
    silent,
    state_of_length,
    tokens_for,
)

V = BASIC_VARIANT


@module("oidcc-server", plan=BASIC, variant=V)
def server(run: TestRun) -> None:
    """OP-Response-code: the happy flow; EnsureIdTokenDoesNotContainNonRequestedClaims warns."""
    happy_flow(run, check_claims=True)


@module("oidcc-response-type-missing", plan=BASIC, variant=V)
def response_type_missing(run: TestRun) -> None:
    """RFC 6749 §3.1.1: redirect with unsupported_response_type / invalid_request, or an error page."""
    client = register(run)
    browser = Browser(run.env)
    request = client.auth_request()
    del request.params["response_type"]
    landing = browser.go(request.url)
    if landing.url is None:
        checks.error_page(run, landing, "response_type is missing", ref="RFC6749-3.1.1")
        return
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.error_response(run, params, ("invalid_request", "unsupported_response_type"))


@module("oidcc-idtoken-signature", plan=BASIC, variant="client_secret_basic, dynamic_client")
def idtoken_signature(run: TestRun) -> None:
    """OP-IDToken-Signature / OP-IDToken-kid: without id_token_signed_response_alg the
    ID token is RS256 (Registration 1.0 §2 default) and names its kid."""
    flow = happy_flow(run)
    run.check(bool(flow.tokens.header.get("kid")), "ID token has no kid", ref="OIDCC-10.1")
    run.check(flow.tokens.header.get("alg") == "RS256",
              f"ID token alg {flow.tokens.header.get('alg')} although the client registered none (default RS256)",
              ref="OIDCC-3.1.3.7")


def _userinfo(run: TestRun, how: str) -> None:
    flow = happy_flow(run, scope="openid profile", userinfo=False)
    response = flow.client.userinfo(flow.tokens.access_token, how)
    if how == "POST-body" and response.status_code >= 300:
        run.warn("the UserInfo endpoint does not take the access token in the body", ref="OIDCC-5.3.1")
        return
    checks.userinfo(run, flow.client, response, flow.tokens.claims.get("sub"))


@module("oidcc-userinfo-get", plan=BASIC, variant=V)
def userinfo_get(run: TestRun) -> None:
    _userinfo(run, "GET")


@module("oidcc-userinfo-post-header", plan=BASIC, variant=V)
def userinfo_post_header(run: TestRun) -> None:
    _userinfo(run, "POST-header")


@module("oidcc-userinfo-post-body", plan=BASIC, variant=V)
def userinfo_post_body(run: TestRun) -> None:
    _userinfo(run, "POST-body")


@module("oidcc-ensure-request-without-nonce-succeeds-for-code-flow", plan=BASIC, variant=V)
def without_nonce(run: TestRun) -> None:
    """OP-nonce-NoReq-code: a code is issued without a nonce (the suite stops at the callback)."""
    client = register(run)
    request = client.auth_request(nonce=False)
    authorize(run, client, Browser(run.env), request)


def _scope(run: TestRun, scope: str) -> None:
    """AbstractOIDCCReturnedClaimsServerTest: UserInfo must carry the scopes' claims (WARNING)."""
    supported = set(run.env.provider.get("scopes_supported") or [])
    missing = set(scope.split()) - supported
    if missing:
        run.warn(f"scopes_supported lacks {sorted(missing)}: the official suite skips this module")
        return
    flow = happy_flow(run, scope=scope, userinfo=False)
    body = checks.userinfo(run, flow.client, flow.client.userinfo(flow.tokens.access_token),
                           flow.tokens.claims.get("sub"))
    checks.scope_claims(run, body, scope)


@module("oidcc-scope-profile", plan=BASIC, variant=V)
def scope_profile(run: TestRun) -> None:
    _scope(run, "openid profile")


@module("oidcc-scope-email", plan=BASIC, variant=V)
def scope_email(run: TestRun) -> None:
    _scope(run, "openid email")


@module("oidcc-scope-address", plan=BASIC, variant=V)
def scope_address(run: TestRun) -> None:
    _scope(run, "openid address")


@module("oidcc-scope-phone", plan=BASIC, variant=V)
def scope_phone(run: TestRun) -> None:
    _scope(run, "openid phone")


@module("oidcc-scope-all", plan=BASIC, variant=V)
def scope_all(run: TestRun) -> None:
    _scope(run, "openid email phone address profile")


@module("oidcc-alternate-happy-flow", plan=BASIC, variant=V)
def alternate_happy_flow(run: TestRun) -> None:
    """RFC 6749 §3.3: reversed scope order and parameters in reverse alphabetical order
    (older suite name: oidcc-ensure-other-scope-order-succeeds)."""
    client = register(run)
    browser = Browser(run.env)
    request = client.auth_request(scope="email openid")
    ordered = sorted(request.params.items(), reverse=True)
    url = f"{request.endpoint}?{urlencode(ordered)}"
    landing = browser.go(url)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    tokens = tokens_for(run, client, request, params)
    body = checks.userinfo(run, client, client.userinfo(tokens.access_token), tokens.claims.get("sub"))
    checks.scope_claims(run, body, "email openid")


@module("oidcc-display-page", plan=BASIC, variant=V)
def display_page(run: TestRun) -> None:
    happy_flow(run, display="page")


@module("oidcc-display-popup", plan=BASIC, variant=V)
def display_popup(run: TestRun) -> None:
    happy_flow(run, display="popup")


@module("oidcc-prompt-login", plan=BASIC, variant=V)
def prompt_login(run: TestRun) -> None:
    """OIDC Core §3.1.2.1: prompt=login signs the person in again; the second auth_time is later."""
    first = happy_flow(run)
    wait(1)
    request = first.client.auth_request(prompt="login")
    params = login_shown(run, first.browser, request)
    second = tokens_for(run, first.client, request, params)
    run.check(second.claims.get("auth_time", 0) > first.tokens.claims.get("auth_time", 0),
              "the second auth_time is not later than the first", ref="OIDCC-2")
    protected_resource(run, first.client, second)


@module("oidcc-prompt-none-not-logged-in", plan=BASIC, variant=V)
def prompt_none_not_logged_in(run: TestRun) -> None:
    """OIDC Core §3.1.2.6: no session and prompt=none → login_required (or another UI error) by redirect."""
    client = register(run)
    browser = Browser(run.env)
    request = client.auth_request(prompt="none", state=state_of_length(128))
    landing = silent(run, browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.error_response(run, params, checks.UI_ERRORS)


def _same_auth(run: TestRun, first_claims: dict, second_claims: dict) -> None:
    """CheckIdTokenAuthTimeClaimsSameIfPresent, CheckIdTokenSubConsistentForSecondAuthorization."""
    run.check(first_claims.get("auth_time") == second_claims.get("auth_time"),
              "auth_time differs between the two ID tokens of one session", ref="OIDCC-2")
    run.check(first_claims.get("sub") == second_claims.get("sub"), "sub differs between the two ID tokens",
              ref="OIDCC-2")


@module("oidcc-prompt-none-logged-in", plan=BASIC, variant=V)
def prompt_none_logged_in(run: TestRun) -> None:
    """prompt=none with a session (and remembered consent) answers at once, same sub."""
    first = happy_flow(run)
    request = first.client.auth_request(prompt="none")
    landing = silent(run, first.browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    second = tokens_for(run, first.client, request, params)
    _same_auth(run, first.tokens.claims, second.claims)


@module("oidcc-max-age-1", plan=BASIC, variant=V)
def max_age_1(run: TestRun) -> None:
    """max_age=1 after 2 s forces a new login; auth_time present, later and recent."""
    first = happy_flow(run)
    wait(2)
    request = first.client.auth_request(max_age=1)
    params = login_shown(run, first.browser, request)
    second = tokens_for(run, first.client, request, params)
    auth_time = second.claims.get("auth_time")
    run.require(isinstance(auth_time, int), "no auth_time in the ID token although max_age was sent",
                ref="OIDCC-3.1.2.1")
    run.check(auth_time > first.tokens.claims.get("auth_time", 0), "auth_time is not later than the first login",
              ref="OIDCC-2")
    run.check(abs(time.time() - auth_time) < 60, "auth_time is not recent", ref="OIDCC-2")


@module("oidcc-max-age-10000", plan=BASIC, variant=V)
def max_age_10000(run: TestRun) -> None:
    """max_age=15000 then max_age=10000: no new login, same auth_time and sub."""
    first = happy_flow(run, max_age=15000)
    run.check("auth_time" in first.tokens.claims, "no auth_time although max_age was sent", ref="OIDCC-3.1.2.1")
    request = first.client.auth_request(max_age=10000)
    landing = silent(run, first.browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    second = tokens_for(run, first.client, request, params)
    run.check("auth_time" in second.claims, "no auth_time although max_age was sent", ref="OIDCC-3.1.2.1")
    _same_auth(run, first.tokens.claims, second.claims)


@module("oidcc-ensure-request-with-unknown-parameter-succeeds", plan=BASIC, variant=V)
def unknown_parameter(run: TestRun) -> None:
    """RFC 6749 §3.1: unrecognised parameters are ignored."""
    happy_flow(run, extra_parameter="ignored-by-the-op")


@module("oidcc-id-token-hint", plan=BASIC, variant=V)
def id_token_hint(run: TestRun) -> None:
    """prompt=none with the first ID token as id_token_hint answers silently, same sub."""
    first = happy_flow(run)
    request = first.client.auth_request(prompt="none", id_token_hint=first.tokens.id_token)
    landing = silent(run, first.browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    second = tokens_for(run, first.client, request, params)
    _same_auth(run, first.tokens.claims, second.claims)


@module("oidcc-login-hint", plan=BASIC, variant=V)
def login_hint(run: TestRun) -> None:
    from urllib.parse import urlsplit

    happy_flow(run, login_hint=f"buffy@{urlsplit(run.env.issuer).hostname}")


@module("oidcc-ui-locales", plan=BASIC, variant=V)
def ui_locales(run: TestRun) -> None:
    happy_flow(run, ui_locales="se")


@module("oidcc-claims-locales", plan=BASIC, variant=V)
def claims_locales(run: TestRun) -> None:
    happy_flow(run, claims_locales="se")


@module("oidcc-ensure-request-with-acr-values-succeeds", plan=BASIC, variant=V)
def acr_values(run: TestRun) -> None:
    """acr_values = acr_values_supported; the acr SHOULD be one of them (WARNING)."""
    values = run.env.provider.get("acr_values_supported") or ["1", "2"]
    flow = happy_flow(run, acr_values=" ".join(values))
    run.check(flow.tokens.claims.get("acr") in values, f"acr {flow.tokens.claims.get('acr')!r} not among {values}",
              ref="OIDCC-3.1.2.1", warning=True)


def _code_reuse(run: TestRun, delay: float) -> None:
    client = register(run)
    request = client.auth_request()
    params = authorize(run, client, Browser(run.env), request)
    first = tokens_for(run, client, request, params)
    protected_resource(run, client, first)
    wait(delay)
    again = client.exchange(run, params["code"], request)
    if delay == 0 and again.response.status_code == 200:
        run.warn("the OP accepted the authorization code twice", ref="RFC6749-4.1.2")
        return
    checks.token_error(run, again.response, "invalid_grant")
    if delay:
        response = client.userinfo(first.access_token)
        run.check(400 <= response.status_code < 500,
                  f"the access token issued from the reused code still works (HTTP {response.status_code})",
                  ref="RFC6749-4.1.2", warning=True)


@module("oidcc-codereuse", plan=BASIC, variant=V)
def codereuse(run: TestRun) -> None:
    _code_reuse(run, 0)


@module("oidcc-codereuse-30seconds", plan=BASIC, variant=V)
def codereuse_30seconds(run: TestRun) -> None:
    """Reuse after the wait: invalid_grant, and the tokens issued from the code are revoked."""
    _code_reuse(run, run.env.options.code_reuse_wait)


@module("oidcc-ensure-registered-redirect-uri", plan=BASIC, variant=V)
def registered_redirect_uri(run: TestRun) -> None:
    """OIDC Core §3.1.2.1: an unregistered redirect URI gets an error page, no redirect."""
    client = register(run)
    request = client.auth_request()
    request.params["redirect_uri"] = client.redirect_uri + state_of_length(10)
    checks.error_page(run, Browser(run.env).go(request.url), "the redirect URI is not registered",
                      ref="OIDCC-3.1.2.1")


@module("oidcc-ensure-post-request-succeeds", plan=BASIC, variant=V)
def post_request(run: TestRun) -> None:
    """OIDC Core §3.1.2.1: the authorization endpoint accepts POST."""
    happy_flow(run, method="POST")


@module("oidcc-server-client-secret-post", plan=BASIC, variant="client_secret_post")
def server_client_secret_post(run: TestRun) -> None:
    happy_flow(run, auth="client_secret_post")


@module("oidcc-claims-essential", plan=BASIC, variant=V)
def claims_essential(run: TestRun) -> None:
    """OIDC Core §5.5: name requested as essential for UserInfo; it should be there, not in the ID token."""
    flow = happy_flow(run, claims={"userinfo": {"name": {"essential": True}}}, userinfo=False)
    body = checks.userinfo(run, flow.client, flow.client.userinfo(flow.tokens.access_token),
                           flow.tokens.claims.get("sub"))
    run.check("name" in body, "UserInfo lacks the essential name claim", ref="OIDCC-5.5", warning=True)
    run.check("name" not in flow.tokens.claims, "the ID token contains name (requested for UserInfo only)",
              ref="OIDCC-5.5", warning=True)


@module("oidcc-ensure-request-with-valid-pkce-succeeds", plan=BASIC, variant=V)
def valid_pkce(run: TestRun) -> None:
    """RFC 7636: a valid S256 challenge and verifier succeed."""
    flow = happy_flow(run)
    run.check(flow.request.params.get("code_challenge_method") == "S256", "the request did not use PKCE S256")
