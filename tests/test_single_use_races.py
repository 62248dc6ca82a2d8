"""Every single-use thing succeeds exactly once under parallel requests (PROTOCOL §7.6).

Real processes, real HTTP: a multi-worker ``idp serve`` (gunicorn, 2 workers × 4
threads) on SQLite or PostgreSQL, and 20 copies of one request released together.
Exactly one may succeed; every other copy gets a clear 4xx, never a 5xx. (An enrolment
finish is the one retry-safe step: every copy gets the same single answer.)

Every test runs twice: against one instance, and with its parallel requests spread by a
round-robin balancer over two instances of one deployment (one database, one Redis).
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests
from sqlalchemy import select

from idp.storage.models import BrowserSession, DeviceCertificate
from tests.support.authenticator import b64url_decode
from tests.support.balancer import Deployment
from tests.support.core import txn_of
from tests.support.rp import RelyingParty, browser_login, login_status, parse_consent_form
from tests.support.server import ServedIdP, parallel, statuses
from tests.support.wallet import Enrolled, Wallet

N = 20
TIMEOUT = 60


@pytest.fixture
def served_idp(spread_idp: ServedIdP) -> ServedIdP:
    return spread_idp


@pytest.fixture(scope="module")
def person(spread_deployment: ServedIdP | Deployment) -> tuple[Wallet, Enrolled]:
    server = spread_deployment if isinstance(spread_deployment, ServedIdP) else spread_deployment.front
    wallet = server.wallet()
    return wallet, wallet.enroll(server.card())


def _rp(server: ServedIdP, **metadata: Any) -> RelyingParty:
    metadata.setdefault("scope", "openid profile")
    return RelyingParty.register(server.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{secrets.token_hex(4)}",
                                 rp_category="municipal", **metadata)


def _exactly_one(responses: list[requests.Response], succeeded: Any) -> requests.Response:
    """One response passes ``succeeded``; all the others are 4xx (no 5xx, no second success)."""
    winners = [r for r in responses if succeeded(r)]
    summary = sorted((r.status_code, r.headers.get("Location", "")[:40]) for r in responses)
    assert len(winners) == 1, f"{len(winners)} successes: {summary}"
    assert all(400 <= r.status_code < 500 for r in responses if r is not winners[0]), summary
    return winners[0]


def _post_json(url: str, body: dict) -> Any:
    return lambda i: requests.post(url, json=body, headers={"Accept": "application/json"}, timeout=TIMEOUT,
                                   allow_redirects=False)


def _login_page(server: ServedIdP, rp: RelyingParty, browser: requests.Session, **extra: Any) -> str:
    location = rp.start(browser, **extra)
    assert urlsplit(location).path == "/login", location
    return txn_of(location)


def _still_logs_in(server: ServedIdP, wallet: Wallet, device: Enrolled) -> None:
    """The device was not flagged as a clone by the duplicates: a fresh login succeeds."""
    rp, browser = _rp(server), requests.Session()
    result = rp.finish(browser_login(browser, server.base_url, rp.start(browser), wallet, device))
    assert result.access_token


def test_login_assertion_is_used_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    wallet, device = person
    txn = _login_page(served_idp, _rp(served_idp), requests.Session())
    options = wallet.login_options(txn)
    credential = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    responses = parallel(_post_json(served_idp.url("/login/assertion"), {"txn": txn, "credential": credential}), N)
    _exactly_one(responses, lambda r: r.status_code == 200)
    _still_logs_in(served_idp, wallet, device)


def test_enrolment_finish_issues_one_certificate_and_one_answer(served_idp: ServedIdP) -> None:
    """Duplicates of one finish are retries (issue 15): every copy gets the one answer of
    the step that was taken, and one certificate is issued."""
    wallet = served_idp.wallet()
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    body = wallet.finish_body(start, served_idp.card(), authenticator)
    responses = parallel(_post_json(served_idp.url("/enroll/finish"), body), N)
    assert statuses(responses) == [201] * N, [r.text[:200] for r in responses if r.status_code != 201]
    answers = [{k: v for k, v in r.json().items() if k != "expires_in"} for r in responses]
    assert all(answer == answers[0] for answer in answers)
    with served_idp.engine().connect() as db:
        issued = db.scalars(select(DeviceCertificate.certificate_der).where(
            DeviceCertificate.credential_id == b64url_decode(body["credential"]["rawId"]))).all()
    assert [base64.b64encode(der).decode() for der in issued] == [answers[0]["certificate"]]
    other = wallet.finish_body(start, served_idp.card(), wallet.new_authenticator())
    refused = parallel(_post_json(served_idp.url("/enroll/finish"), other), 4)
    assert statuses(refused) == [400] * 4


def test_activation_is_used_once(served_idp: ServedIdP) -> None:
    wallet = served_idp.wallet()
    authenticator = wallet.new_authenticator()
    finished = wallet.finish(wallet.begin(), served_idp.card(), authenticator)
    credential = authenticator.get(dict(finished.activation_options), credential_id=finished.credential_id)
    responses = parallel(_post_json(served_idp.url("/enroll/activate"),
                                    {"enrollment_id": finished.enrollment_id, "credential": credential}), N)
    _exactly_one(responses, lambda r: r.status_code == 200)
    device = Enrolled(finished.enrollment_id, None, finished.certificate_der, finished.ca_chain, authenticator,
                      finished.credential_id)
    _still_logs_in(served_idp, wallet, device)


def test_authorization_code_is_used_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    wallet, device = person
    rp, browser = _rp(served_idp), requests.Session()
    request, params = rp.parse_callback(browser_login(browser, served_idp.base_url, rp.start(browser), wallet, device))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier}
    auth = rp.client_auth()
    responses = parallel(lambda i: requests.post(rp.provider["token_endpoint"], data=form, auth=auth,
                                                 timeout=TIMEOUT), N)
    _exactly_one(responses, lambda r: r.status_code == 200)


def test_refresh_token_is_used_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    wallet, device = person
    rp, browser = _rp(served_idp, grant_types=["authorization_code", "refresh_token"]), requests.Session()
    tokens = rp.finish(browser_login(browser, served_idp.base_url,
                                     rp.start(browser, scope="openid offline_access", prompt="consent"),
                                     wallet, device))
    assert tokens.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    auth = rp.client_auth()
    responses = parallel(lambda i: requests.post(rp.provider["token_endpoint"], data=form, auth=auth,
                                                 timeout=TIMEOUT), N)
    _exactly_one(responses, lambda r: r.status_code == 200)


def test_pushed_request_uri_is_used_once(served_idp: ServedIdP) -> None:
    rp = _rp(served_idp)
    url, *_ = rp.authorization_url(par=True)
    assert "request_uri=" in url

    def authorize(i: int) -> requests.Response:
        return requests.get(url, allow_redirects=False, timeout=TIMEOUT)

    responses = parallel(authorize, N)
    _exactly_one(responses, lambda r: r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login")


def _consent_url(server: ServedIdP, rp: RelyingParty, wallet: Wallet, device: Enrolled,
                 browser: requests.Session, **extra: Any) -> str:
    """Log in (same device) up to the consent step; return the /consent URL."""
    txn = _login_page(server, rp, browser, **extra)
    answer = wallet.with_session(browser).login(txn, authenticator=device)
    return urljoin(server.base_url + "/", answer["next"])


def _code_redirect(rp: RelyingParty) -> Any:
    return lambda r: r.status_code in (302, 303) and r.headers.get("Location", "").startswith(rp.redirect_uri) \
        and "code" in dict(parse_qsl(urlsplit(r.headers["Location"]).query))


def test_consent_form_is_answered_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    wallet, device = person
    rp, browser = _rp(served_idp), requests.Session()
    page = browser.get(_consent_url(served_idp, rp, wallet, device, browser, prompt="consent"), timeout=TIMEOUT)
    assert page.status_code == 200
    form = parse_consent_form(page.text)
    action = urljoin(served_idp.base_url + "/", form.action)
    data = form.submission("allow")
    cookies = browser.cookies.get_dict()
    responses = parallel(lambda i: requests.post(action, data=data, cookies=cookies, allow_redirects=False,
                                                 timeout=TIMEOUT), N)
    _exactly_one(responses, _code_redirect(rp))


def test_remembered_consent_page_answers_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    """GET /consent of a transaction a remembered consent answers: one code, not one per request.

    Approved on the phone, the computer's browser goes through /consent (a same-device
    signature is answered by the assertion itself: test_same_device_remembered_consent_*)."""
    wallet, device = person
    rp = _rp(served_idp)
    first = requests.Session()
    rp.finish(browser_login(first, served_idp.base_url, rp.start(first), wallet, device, remember=True))
    browser = requests.Session()  # no IdP session yet: login on the phone, then /consent answers silently
    txn = _login_page(served_idp, rp, browser)
    wallet.login(txn, authenticator=device)
    url = urljoin(served_idp.base_url + "/", login_status(browser, served_idp.base_url, txn)["next"])
    assert urlsplit(url).path == "/consent"
    cookies = browser.cookies.get_dict()
    responses = parallel(lambda i: requests.get(url, cookies=cookies, allow_redirects=False, timeout=TIMEOUT), N)
    winner = _exactly_one(responses, _code_redirect(rp))
    assert rp.finish(winner.headers["Location"]).access_token


def test_a_cross_device_session_is_picked_up_once(served_idp: ServedIdP, person: tuple[Wallet, Enrolled]) -> None:
    """Approved on the phone, the opening browser's status polls (or page loads) start its
    session once: one browser session for the transaction, however many copies race."""
    wallet, device = person
    rp, browser = _rp(served_idp), requests.Session()
    txn = _login_page(served_idp, rp, browser)
    wallet.login(txn, authenticator=device)  # the phone: its own cookies
    cookies = browser.cookies.get_dict()
    url = served_idp.url(f"/login/status?txn={txn}")
    responses = parallel(lambda i: requests.get(url, cookies=cookies, headers={"Accept": "application/json"},
                                                timeout=TIMEOUT), N)
    assert all(r.status_code == 200 and r.json()["status"] == "authenticated" for r in responses), \
        sorted(r.status_code for r in responses)
    assert sum("idp_session" in r.headers.get("Set-Cookie", "") for r in responses) == 1
    with served_idp.engine().connect() as db:
        sessions = db.execute(select(BrowserSession.id).where(BrowserSession.scope_txn == txn)).all()
    assert len(sessions) == 1, sessions


def test_client_assertion_jti_is_used_once(served_idp: ServedIdP) -> None:
    rp = _rp(served_idp, token_endpoint_auth_method="private_key_jwt")
    url, *_ = rp.authorization_url(par=False)
    params = dict(parse_qsl(urlsplit(url).query))
    params.update(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                  client_assertion=rp.client_assertion(exp=int(time.time()) + 600))
    endpoint = rp.provider["pushed_authorization_request_endpoint"]
    responses = parallel(lambda i: requests.post(endpoint, data=params, timeout=TIMEOUT), N)
    _exactly_one(responses, lambda r: r.status_code == 201)
    assert {r.json()["error"] for r in responses if r.status_code != 201} == {"invalid_client"}
