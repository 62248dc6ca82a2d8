"""The flows AbstractOIDCCServerTest runs, shared by the modules.

``happy_flow`` is performAuthorizationFlow + performPostAuthorizationFlow: register (a
dynamic client per module), send the browser, check the callback, exchange the code
(client authentication as registered), run the standard ID token checks, then call the
UserInfo endpoint (requestProtectedResource).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from conformance import checks
from conformance.client import AuthRequest, Browser, Client, Landing, Tokens, query_of, redirect_target
from conformance.framework import TestRun
from tests.support.rp import origin_of

BASIC = "oidcc-basic-certification-test-plan"
CONFIG = "oidcc-config-certification-test-plan"
DYNAMIC = "oidcc-dynamic-certification-test-plan"
LOGOUT = "oidcc-rp-initiated-logout-certification-test-plan"
BACKCHANNEL = "oidcc-backchannel-rp-initiated-logout-certification-test-plan"
EXTRA = "jp-extensions (local)"
BASIC_VARIANT = "client_secret_basic"
DYNAMIC_VARIANT = "private_key_jwt, dynamic_client"


@dataclass
class Flow:
    client: Client
    browser: Browser
    request: AuthRequest
    params: dict[str, str]
    tokens: Tokens


def register(run: TestRun, *, auth: str = "client_secret_basic", **metadata: Any) -> Client:
    client = Client.register(run, auth=auth, **metadata)
    if auth == "private_key_jwt":
        client.rp.assertion_audience = "endpoint"  # the suite's default assertion audience
    return client


def authorize(run: TestRun, client: Client, browser: Browser, request: AuthRequest, *, method: str = "GET",
              consent: str | None = "allow") -> dict[str, str]:
    """Send the browser; return the callback parameters of a successful response."""
    if method == "POST":
        landing = browser.go(request.endpoint, method="POST", data=request.params, consent=consent)
    else:
        landing = browser.go(request.url, consent=consent)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    return params


def tokens_for(run: TestRun, client: Client, request: AuthRequest, params: dict[str, str], *,
               check_claims: bool = False) -> Tokens:
    tokens = client.exchange(run, params["code"], request)
    checks.token_success(run, tokens)
    checks.id_token(run, client, tokens, request, check_claims=check_claims)
    return tokens


def protected_resource(run: TestRun, client: Client, tokens: Tokens) -> None:
    """requestProtectedResource: the access token works at the UserInfo endpoint."""
    response = client.userinfo(tokens.access_token)
    run.check(response.status_code == 200, f"UserInfo with the new access token answered HTTP {response.status_code}",
              ref="OIDCC-5.3.1")


def happy_flow(run: TestRun, *, client: Client | None = None, browser: Browser | None = None,
               auth: str = "client_secret_basic", scope: str = "openid", method: str = "GET",
               check_claims: bool = False, registration: dict[str, Any] | None = None, userinfo: bool = True,
               **extra: Any) -> Flow:
    client = client or register(run, auth=auth, **(registration or {}))
    browser = browser or Browser(run.env)
    request = client.auth_request(scope=scope, **extra)
    params = authorize(run, client, browser, request, method=method)
    tokens = tokens_for(run, client, request, params, check_claims=check_claims)
    if userinfo:
        protected_resource(run, client, tokens)
    return Flow(client, browser, request, params, tokens)


def silent(run: TestRun, browser: Browser, request: AuthRequest) -> Landing:
    """A request the OP must answer without any page: the first response redirects to the RP."""
    response = browser.session.get(request.url, allow_redirects=False, timeout=20)
    target = redirect_target(response, request.url)
    if target is None:
        return Landing(None, response)
    if origin_of(target) == browser.idp_origin:
        run.fail(f"the OP showed {target.split('?')[0]} instead of answering at once", ref="OIDCC-3.1.2.1")
    return Landing(target)


def login_shown(run: TestRun, browser: Browser, request: AuthRequest) -> dict[str, str]:
    """ExpectSecondLoginPage: the OP must ask the person to sign in again."""
    landing, pages = browser.pages(request.url)
    run.check(any('data-action="passkey"' in page for page in pages), "the OP did not show its login page again",
              ref="OIDCC-3.1.2.1")
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.success(run, params)
    return params


def state_of_length(length: int) -> str:
    return secrets.token_urlsafe(length)[:length]


def claims_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def query(url: str) -> dict[str, str]:
    return query_of(url)


def later(seconds: float) -> None:
    time.sleep(seconds)
