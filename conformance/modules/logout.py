"""oidcc-rp-initiated-logout-certification-test-plan and the back-channel logout plan.

AbstractOIDCCRpInitiatedLogout: log in, send the browser to ``end_session_endpoint``, check
where it lands, then try ``prompt=none``, which must fail once the session is gone. Where
the suite expects an error page "or a confirmation", this OP shows its confirmation page
(RP-Initiated Logout 1.0 §2: it MUST ask when the hint is missing or foreign); the runner
then answers it as the person would, where the suite's test continues.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urljoin

from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

from conformance import checks
from conformance.client import b64url, query_of, redirect_target
from conformance.framework import TestRun, module
from conformance.modules.common import BACKCHANNEL, LOGOUT, Flow, happy_flow, silent
from tests.support.rp import parse_page

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def _login(run: TestRun, **registration: Any) -> tuple[Flow, str]:
    post_logout = run.env.rp_host.url(f"/post-logout/{secrets.token_hex(4)}")
    flow = happy_flow(run, registration={"post_logout_redirect_uris": [post_logout], **registration})
    return flow, post_logout


def _end_session(flow: Flow, **params: str) -> tuple[str | None, Any]:
    """Send the browser to end_session_endpoint; (redirect target or None, response)."""
    endpoint = flow.client.rp.provider["end_session_endpoint"]
    url = f"{endpoint}?{urlencode(params)}" if params else endpoint
    response = flow.browser.session.get(url, allow_redirects=False, timeout=20)
    return redirect_target(response, url), response


def _logged_out(run: TestRun, flow: Flow) -> None:
    """The second authorization with prompt=none must fail with a UI-required error."""
    request = flow.client.auth_request(prompt="none", state=secrets.token_urlsafe(96))
    landing = silent(run, flow.browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    checks.error_response(run, params, checks.UI_ERRORS)


def _still_logged_in(run: TestRun, flow: Flow) -> None:
    request = flow.client.auth_request(prompt="none")
    landing = silent(run, flow.browser, request)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    run.check("code" in params, "a refused logout request ended the session anyway", ref="OIDCRIL-2")


def _confirm(run: TestRun, flow: Flow, response: Any, url: str) -> tuple[str | None, Any]:
    """Answer the OP's logout confirmation page as the person would (or accept its logged-out page)."""
    run.require(response.status_code == 200 and "text/html" in response.headers.get("Content-Type", ""),
                f"end_session_endpoint answered HTTP {response.status_code}, not a page", ref="OIDCRIL-2")
    page = parse_page(response.text)
    forms = [f for f in page.forms if f.method == "post" and any(x.name == "logout_decision" for x in f.fields)]
    if not forms:
        return None, response  # a "you are signed out" page
    form = forms[0]
    posted = flow.browser.session.post(urljoin(url, form.action or url),
                                       data=form.submission(("logout_decision", "logout")), allow_redirects=False,
                                       timeout=20)
    return redirect_target(posted, url), posted


def _check_post_logout(run: TestRun, target: str | None, post_logout: str, state: str | None) -> None:
    """CheckPostLogoutState / CheckNoPostLogoutState, CheckForUnexpectedParametersInPostLogoutRedirect."""
    run.require(target is not None and target.split("?")[0] == post_logout,
                f"the OP did not return to the post_logout_redirect_uri (went to {target!r})", ref="OIDCRIL-3")
    params = query_of(target or "")
    if state is None:
        run.check("state" not in params, "state returned although none was sent", ref="OIDCRIL-2")
    else:
        run.check(params.get("state") == state, "state not returned unchanged", ref="OIDCRIL-2")
    run.check(set(params) <= {"state"}, f"unexpected parameters {sorted(set(params) - {'state'})}", ref="OIDCRIL-3",
              warning=True)


@module("oidcc-rp-initiated-logout", plan=LOGOUT)
def rp_initiated_logout(run: TestRun) -> None:
    flow, post_logout = _login(run)
    state = secrets.token_urlsafe(16)
    target, _ = _end_session(flow, id_token_hint=flow.tokens.id_token or "", post_logout_redirect_uri=post_logout,
                             state=state)
    _check_post_logout(run, target, post_logout, state)
    _logged_out(run, flow)


@module("oidcc-rp-initiated-logout-no-state", plan=LOGOUT)
def logout_no_state(run: TestRun) -> None:
    flow, post_logout = _login(run)
    target, _ = _end_session(flow, id_token_hint=flow.tokens.id_token or "", post_logout_redirect_uri=post_logout)
    _check_post_logout(run, target, post_logout, None)
    _logged_out(run, flow)


def _refused(run: TestRun, flow: Flow, params: dict[str, str], what: str) -> None:
    """ExpectInvalidIdTokenHintErrorPage & co: no redirect; an error page (or a confirmation)."""
    target, response = _end_session(flow, **params)
    run.check(target is None, f"the OP redirected to {target!r} although {what}", ref="OIDCRIL-2")
    run.check(response.status_code < 500, f"end_session_endpoint answered HTTP {response.status_code}")
    if target is None and response.status_code >= 400:
        _still_logged_in(run, flow)


@module("oidcc-rp-initiated-logout-bad-post-logout-redirect-uri", plan=LOGOUT)
def logout_bad_redirect(run: TestRun) -> None:
    flow, post_logout = _login(run)
    _refused(run, flow, {"id_token_hint": flow.tokens.id_token or "", "state": "s",
                         "post_logout_redirect_uri": post_logout + "-unregistered"},
             "the post_logout_redirect_uri is not registered")


@module("oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri", plan=LOGOUT)
def logout_query_added(run: TestRun) -> None:
    flow, post_logout = _login(run)
    _refused(run, flow, {"id_token_hint": flow.tokens.id_token or "", "state": "s",
                         "post_logout_redirect_uri": post_logout + "?foo=bar"},
             "a query was added to the post_logout_redirect_uri")


@module("oidcc-rp-initiated-logout-bad-id-token-hint", plan=LOGOUT)
def logout_bad_hint(run: TestRun) -> None:
    """An id_token_hint signed by someone else (GenerateFakeIdTokenClaims, SignFakeIdToken)."""
    flow, post_logout = _login(run)
    key = JWK.generate(kty="RSA", size=2048, kid=flow.tokens.header.get("kid", "k"))
    jws = JWS(json.dumps(flow.tokens.claims).encode())
    jws.add_signature(key, alg="RS256", protected=json.dumps({"alg": "RS256", "kid": key.get("kid")}))
    _refused(run, flow, {"id_token_hint": jws.serialize(compact=True), "post_logout_redirect_uri": post_logout,
                         "state": "s"}, "the id_token_hint was not signed by the OP")


@module("oidcc-rp-initiated-logout-modified-id-token-hint", plan=LOGOUT)
def logout_modified_hint(run: TestRun) -> None:
    """ChangeIdTokenToAlgNone: the real ID token re-encoded with alg none."""
    flow, post_logout = _login(run)
    _, payload, _ = (flow.tokens.id_token or "..").split(".")
    unsigned = f"{b64url(json.dumps({'alg': 'none'}).encode())}.{payload}."
    _refused(run, flow, {"id_token_hint": unsigned, "post_logout_redirect_uri": post_logout, "state": "s"},
             "the id_token_hint was changed to alg none")


@module("oidcc-rp-initiated-logout-no-id-token-hint", plan=LOGOUT)
def logout_no_hint(run: TestRun) -> None:
    """No id_token_hint: the OP must not redirect straight back (error page or confirmation)."""
    flow, post_logout = _login(run)
    _refused(run, flow, {"post_logout_redirect_uri": post_logout, "state": "s", "client_id": flow.client.client_id},
             "there was no id_token_hint")


def _page_then_logged_out(run: TestRun, flow: Flow, params: dict[str, str]) -> None:
    """ExpectSuccessfulLogoutPage: a page (after confirming, when asked), then no session."""
    target, response = _end_session(flow, **params)
    run.require(target is None, f"the OP redirected to {target!r}", ref="OIDCRIL-2")
    target, response = _confirm(run, flow, response, flow.client.rp.provider["end_session_endpoint"])
    run.check(target is None or target.startswith(run.env.issuer), f"the OP redirected to {target!r}",
              ref="OIDCRIL-2")
    _logged_out(run, flow)


@module("oidcc-rp-initiated-logout-no-params", plan=LOGOUT)
def logout_no_params(run: TestRun) -> None:
    flow, _ = _login(run)
    _page_then_logged_out(run, flow, {})


@module("oidcc-rp-initiated-logout-only-state", plan=LOGOUT)
def logout_only_state(run: TestRun) -> None:
    flow, _ = _login(run)
    _page_then_logged_out(run, flow, {"state": secrets.token_urlsafe(8)})


@module("oidcc-rp-initiated-logout-no-post-logout-redirect-uri", plan=LOGOUT)
def logout_no_post_logout_redirect_uri(run: TestRun) -> None:
    flow, _ = _login(run)
    _page_then_logged_out(run, flow, {"id_token_hint": flow.tokens.id_token or "", "state": "s"})


@module("oidcc-backchannel-rp-initiated-logout", plan=BACKCHANNEL)
def backchannel_rp_initiated_logout(run: TestRun) -> None:
    """Back-Channel Logout 1.0 §2.4–2.5: a signed Logout Token reaches backchannel_logout_uri."""
    path = f"/backchannel/{secrets.token_hex(6)}"
    uri = run.env.rp_host.put(path, b"", content_type="text/plain", method="POST")
    flow, post_logout = _login(run, backchannel_logout_uri=uri, backchannel_logout_session_required=True)
    run.check(isinstance(flow.tokens.claims.get("sid"), str), "the ID token has no sid although the client "
              "registered backchannel_logout_session_required", ref="OIDCBCL-2.1")
    state = secrets.token_urlsafe(8)
    target, _ = _end_session(flow, id_token_hint=flow.tokens.id_token or "", post_logout_redirect_uri=post_logout,
                             state=state)
    _check_post_logout(run, target, post_logout, state)
    received = run.env.rp_host.wait_for(path, timeout=10)
    run.require(received, "no logout token arrived at the backchannel_logout_uri", ref="OIDCBCL-2.5")
    request = received[0]
    run.check(request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"),
              "the back-channel request is not form-encoded", ref="OIDCBCL-2.5")
    run.check(set(request.form) == {"logout_token"}, f"unexpected parameters {sorted(request.form)}",
              ref="OIDCBCL-2.5", warning=True)
    token = request.value("logout_token")
    run.require(token, "no logout_token parameter", ref="OIDCBCL-2.5")
    _logout_token(run, flow, token)
    _logged_out(run, flow)


def _logout_token(run: TestRun, flow: Flow, token: str) -> None:
    """ValidateLogoutTokenSignature, ValidateLogoutTokenClaims, CheckIdTokenSubMatchesLogoutToken,
    CheckIdTokenSidMatchesLogoutToken, CheckLogoutTokenNoNonce, CheckLogoutTokenHasSubOrSid (§2.4)."""
    from tests.support.rp import IdTokenError, _verified_payload

    try:
        header, claims = _verified_payload(token, flow.client.rp.jwks(refresh=True), {"RS256", "ES256", "PS256"})
    except IdTokenError as exc:
        run.fail(f"the logout token does not verify: {exc}", ref="OIDCBCL-2.4")
    now = time.time()
    id_claims = flow.tokens.claims
    run.check(claims.get("iss") == run.env.issuer, "logout token iss is not the issuer", ref="OIDCBCL-2.4")
    aud = claims.get("aud")
    run.check(aud == flow.client.client_id or (isinstance(aud, list) and flow.client.client_id in aud),
              "logout token aud is not the client", ref="OIDCBCL-2.4")
    run.check(isinstance(claims.get("iat"), int) and abs(now - claims["iat"]) < 300, "logout token iat is not recent",
              ref="OIDCBCL-2.4")
    run.check(isinstance(claims.get("jti"), str) and claims["jti"], "logout token has no jti", ref="OIDCBCL-2.4")
    events = claims.get("events")
    run.check(isinstance(events, dict) and events.get(EVENT) == {}, "logout token events lacks the logout event",
              ref="OIDCBCL-2.4")
    run.check("nonce" not in claims, "logout token carries a nonce", ref="OIDCBCL-2.4")
    run.check("sub" in claims or "sid" in claims, "logout token has neither sub nor sid", ref="OIDCBCL-2.4")
    if "sub" in claims:
        run.check(claims["sub"] == id_claims.get("sub"), "logout token sub differs from the ID token's",
                  ref="OIDCBCL-2.4")
    if "sid" in claims:
        run.check(claims["sid"] == id_claims.get("sid"), "logout token sid differs from the ID token's",
                  ref="OIDCBCL-2.4")
    run.check(header.get("typ") in (None, "logout+jwt", "JWT"), f"logout token typ {header.get('typ')!r}",
              ref="OIDCBCL-2.4", warning=True)


