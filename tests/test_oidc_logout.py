"""RP-Initiated Logout 1.0 and Back-Channel Logout 1.0, end to end over HTTP."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import pytest
import requests
from jwcrypto.jwk import JWKSet
from jwcrypto.jwt import JWT

from tests.conftest import RunningIdP
from tests.support.rp import RelyingParty, TokenResult, browser_login, parse_page
from tests.support.rp_host import RpHost

EVENT = "http://schemas.openid.net/event/backchannel-logout"


def register(idp: RunningIdP, host: RpHost, **metadata: Any) -> tuple[RelyingParty, str]:
    post_logout = host.url(f"/bye/{secrets.token_hex(3)}")
    rp = RelyingParty.register(idp.base_url, redirect_uri=host.url(f"/cb/{secrets.token_hex(3)}"),
                               rp_category="municipal", post_logout_redirect_uris=[post_logout], **metadata)
    return rp, post_logout


def login(idp: RunningIdP, rp: RelyingParty, browser: requests.Session, person: Any) -> TokenResult:
    wallet, device = person
    return rp.finish(browser_login(browser, idp.base_url, rp.start(browser), wallet, device))


def logout(rp: RelyingParty, browser: requests.Session, **params: str) -> requests.Response:
    return browser.get(f"{rp.provider['end_session_endpoint']}?{urlencode(params)}", allow_redirects=False, timeout=10)


def signed_in(rp: RelyingParty, browser: requests.Session) -> bool:
    answer = dict(parse_qsl(urlsplit(rp.start(browser, prompt="none")).query))
    rp._pending.clear()
    return "code" in answer


def test_logout_with_a_matching_hint_redirects_with_state(idp: RunningIdP, host: RpHost, person: Any) -> None:
    rp, post_logout = register(idp, host)
    browser = requests.Session()
    result = login(idp, rp, browser, person)
    response = logout(rp, browser, id_token_hint=result.id_token or "", post_logout_redirect_uri=post_logout,
                      state="s-1")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{post_logout}?state=s-1"
    assert not signed_in(rp, browser)


@pytest.mark.parametrize("target", ["unregistered", "query-added"])
def test_an_unregistered_target_is_an_error_page_and_ends_nothing(idp: RunningIdP, host: RpHost, person: Any,
                                                                  target: str) -> None:
    rp, post_logout = register(idp, host)
    browser = requests.Session()
    result = login(idp, rp, browser, person)
    uri = post_logout + ("-x" if target == "unregistered" else "?foo=bar")
    response = logout(rp, browser, id_token_hint=result.id_token or "", post_logout_redirect_uri=uri)
    assert response.status_code == 400 and "Location" not in response.headers
    assert signed_in(rp, browser)


def test_without_a_hint_the_person_is_asked(idp: RunningIdP, host: RpHost, person: Any) -> None:
    """§2: the OP MUST ask; the form is bound to this browser; 'stay' keeps the session."""
    rp, post_logout = register(idp, host)
    browser = requests.Session()
    login(idp, rp, browser, person)
    page = logout(rp, browser, client_id=rp.client_id, post_logout_redirect_uri=post_logout, state="s-2")
    assert page.status_code == 200
    form = next(f for f in parse_page(page.text).forms if f.method == "post")
    action = urljoin(page.url, form.action)
    stolen = requests.post(action, data=form.submission(("logout_decision", "logout")), allow_redirects=False,
                           timeout=10)
    assert stolen.status_code == 400  # another browser cannot replay the form
    stay = browser.post(action, data=form.submission(("logout_decision", "stay")), allow_redirects=False, timeout=10)
    assert stay.status_code == 303 and signed_in(rp, browser)
    done = browser.post(action, data=form.submission(("logout_decision", "logout")), allow_redirects=False,
                        timeout=10)
    assert done.headers["Location"] == f"{post_logout}?state=s-2"
    assert not signed_in(rp, browser)


def test_a_hint_for_another_session_is_asked_about(idp: RunningIdP, host: RpHost, person: Any) -> None:
    rp, post_logout = register(idp, host)
    mine, theirs = requests.Session(), requests.Session()
    login(idp, rp, mine, person)
    other = login(idp, rp, theirs, person)
    page = logout(rp, mine, id_token_hint=other.id_token or "", post_logout_redirect_uri=post_logout)
    assert page.status_code == 200 and 'name="logout_decision"' in page.text
    assert signed_in(rp, mine)


def test_a_foreign_or_unsigned_hint_is_refused(idp: RunningIdP, host: RpHost, person: Any) -> None:
    rp, post_logout = register(idp, host)
    browser = requests.Session()
    result = login(idp, rp, browser, person)
    header, payload, _ = (result.id_token or "").split(".")
    response = logout(rp, browser, id_token_hint=f"eyJhbGciOiJub25lIn0.{payload}.",
                      post_logout_redirect_uri=post_logout)
    assert response.status_code == 400
    assert signed_in(rp, browser)


def test_back_channel_logout_tokens_go_to_the_session_rps_only(idp: RunningIdP, host: RpHost, person: Any) -> None:
    """BCL §2.4–2.7: each RP of the session with a back-channel URI gets its own token (its
    own sid and sub); RPs outside the session, or without a URI, get nothing; a dead RP
    does not hold up the logout."""
    paths = [f"/bcl/{secrets.token_hex(4)}" for _ in range(3)]
    for path in paths:
        host.put(path, b"", content_type="text/plain", method="POST")
    first, post_logout = register(idp, host, backchannel_logout_uri=host.url(paths[0]),
                                  backchannel_logout_session_required=True)
    second, _ = register(idp, host, backchannel_logout_uri=host.url(paths[1]))
    outsider, _ = register(idp, host, backchannel_logout_uri=host.url(paths[2]))
    silent, _ = register(idp, host)
    dead, _ = register(idp, host, backchannel_logout_uri="http://127.0.0.1:9/gone")
    browser = requests.Session()
    results = [login(idp, rp, browser, person) for rp in (first, second, silent, dead)]
    login(idp, outsider, requests.Session(), person)
    started = time.monotonic()
    response = logout(first, browser, id_token_hint=results[0].id_token or "", post_logout_redirect_uri=post_logout)
    assert response.status_code == 302 and time.monotonic() - started < 2
    jwks = JWKSet.from_json(requests.get(first.provider["jwks_uri"], timeout=10).text)
    for rp, result, path in ((first, results[0], paths[0]), (second, results[1], paths[1])):
        received = host.wait_for(path, timeout=5)
        assert len(received) == 1
        token = JWT(jwt=received[0].value("logout_token"), key=jwks, expected_type="JWS")
        claims = json.loads(token.claims)
        assert claims["aud"] == rp.client_id and claims["iss"] == idp.base_url
        assert claims["events"] == {EVENT: {}} and "nonce" not in claims and claims["jti"]
        assert claims["sid"] == result.claims["sid"] and claims["sub"] == result.claims["sub"]
        assert json.loads(token.header)["typ"] == "logout+jwt"
    assert results[0].claims["sid"] != results[1].claims["sid"]  # per-client sid
    time.sleep(0.5)
    assert host.received(paths[2]) == []
