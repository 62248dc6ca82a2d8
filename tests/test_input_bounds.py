"""Input bounds (idp/web/input_guard.py, idp/bounded_json.py, PROTOCOL §7.6): malformed
input of every kind the issue found gets a 4xx in the endpoint's own format, never a 5xx."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests

from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import parse_consent_form

DEEP = "[" * 3000 + "]" * 3000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _deep_jwt() -> str:
    return _b64(b'{"alg":"ES256"}') + "." + _b64(('{"a":' * 3000 + "1" + "}" * 3000).encode()) + ".c2ln"


def _json_error(response: requests.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) >= {"error", "error_description"}
    if error:
        assert body["error"] == error, body
    return body


@pytest.mark.parametrize("path", ["/register", "/enroll/begin", "/enroll/finish", "/enroll/activate",
                                  "/login/options", "/login/assertion", "/account/login/options",
                                  "/account/login/assertion"])
def test_deeply_nested_json_bodies(idp: RunningIdP, path: str) -> None:
    response = requests.post(idp.base_url + path, data=DEEP, headers={"Content-Type": "application/json"},
                             timeout=10)
    assert "nests deeper" in _json_error(response, 400, "invalid_request")["error_description"]


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke", "/par"])
def test_a_client_assertion_nested_3000_deep(idp: RunningIdP, path: str) -> None:
    rp = core.register(idp)
    response = requests.post(idp.base_url + path, timeout=10, data={
        "client_id": rp.client_id, "client_assertion": _deep_jwt(), "token": "x", "grant_type": "authorization_code",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "code": "x"})
    _json_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/introspect", "/revoke", "/par", "/token"])
@pytest.mark.parametrize("credentials", [b"\xff\xfe:\xfa", "クライアント:秘密".encode("shift_jis"), b"no-colon"])
def test_undecodable_basic_credentials_are_invalid_client(idp: RunningIdP, path: str, credentials: bytes) -> None:
    header = b"Basic " + base64.b64encode(credentials)
    response = requests.post(idp.base_url + path, data={"token": "x"}, headers={"Authorization": header}, timeout=10)
    _json_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_non_latin1_basic_header_is_invalid_client(idp: RunningIdP) -> None:
    header = "Basic ".encode() + "кириллица".encode("utf-8")
    response = requests.post(idp.base_url + "/introspect", data={"token": "x"}, headers={"Authorization": header},
                             timeout=10)
    _json_error(response, 401, "invalid_client")


def test_claims_nested_1000_deep_at_authorize(idp: RunningIdP) -> None:
    rp = core.register(idp)
    claims = '{"userinfo":' * 1000 + "null" + "}" * 1000
    response = requests.get(idp.base_url + "/authorize", allow_redirects=False, timeout=10, params={
        "client_id": rp.client_id, "response_type": "code", "scope": "openid", "claims": claims,
        "redirect_uri": rp.redirect_uri})
    assert 400 <= response.status_code < 500 or response.status_code == 302, response.status_code
    if response.status_code == 302:
        assert dict(parse_qsl(urlsplit(response.headers["Location"]).query))["error"] == "invalid_request"


@pytest.mark.parametrize("uri", ["https://[::1/cb", "https://[fe80::1%zz/cb", "https://[::1]:99999/cb",
                                 "https://[not-an-address]/cb"])
def test_broken_ipv6_redirect_uris(idp: RunningIdP, uri: str) -> None:
    body = {"rp_category": "municipal", "redirect_uris": [uri]}
    _json_error(requests.post(idp.base_url + "/register", json=body, timeout=10), 400, "invalid_redirect_uri")
    body = {"rp_category": "municipal", "redirect_uris": ["http://127.0.0.1:9/cb"], "post_logout_redirect_uris": [uri]}
    _json_error(requests.post(idp.base_url + "/register", json=body, timeout=10), 400, "invalid_client_metadata")


def test_a_redirect_host_longer_than_any_column_is_refused(idp: RunningIdP) -> None:
    body = {"rp_category": "municipal", "redirect_uris": [f"https://{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}."
                                                          f"{'e' * 60}.example/cb"]}
    _json_error(requests.post(idp.base_url + "/register", json=body, timeout=10), 400, "invalid_redirect_uri")


def test_login_status_with_a_nul_answers_json(idp: RunningIdP) -> None:
    response = requests.get(idp.base_url + "/login/status?txn=%00", headers={"Accept": "text/html"}, timeout=10)
    _json_error(response, 400, "invalid_request")


def test_only_recognised_authorization_parameters_are_stored(idp: RunningIdP) -> None:
    from idp.storage.models import AuthorizationTransaction

    rp = core.register(idp)
    browser = requests.Session()
    junk = {f"junk{i}": "x" * 4000 for i in range(60)}
    url, *_ = rp.authorization_url()
    form = {**dict(parse_qsl(urlsplit(url).query)), **junk}
    response = browser.post(idp.base_url + "/authorize", data=form, allow_redirects=False, timeout=10)
    txn = core.txn_of(response.headers["Location"])
    stored = core.db_get(idp, AuthorizationTransaction, txn).request
    assert not any(key.startswith("junk") for key in stored)
    assert len(json.dumps(stored)) < 4096


def test_a_nul_inside_an_unsigned_request_object_is_refused(idp: RunningIdP) -> None:
    rp = core.register(idp, request_object_signing_alg="none")
    browser = requests.Session()
    obj = _b64(b'{"alg":"none"}') + "." + _b64(json.dumps({"nonce": "a\u0000b", "purpose": "p\u0000"}).encode()) + "."
    location = rp.start(browser, request=obj)
    query = dict(parse_qsl(urlsplit(location).query))
    assert query.get("error") == "invalid_request_object", location


def test_first_consent_from_six_tabs_at_once(idp: RunningIdP) -> None:
    """Six tabs of one browser post the first consent together: each answer is a redirect
    or a clean 4xx (never a unique-key 5xx), and exactly one consent row exists."""
    from sqlalchemy import func, select

    from idp.storage.models import Consent

    wallet = idp.wallet()
    device = core.enrol(idp, wallet=wallet)
    rp = core.register(idp)
    browser = requests.Session()
    first = core.txn_of(rp.start(browser))
    answer = wallet.with_session(browser).login(first, authenticator=device)
    pages = [urljoin(idp.base_url, answer["next"])] + [urljoin(idp.base_url, rp.start(browser)) for _ in range(5)]
    forms = [parse_consent_form(browser.get(url, timeout=10).text) for url in pages]
    barrier = threading.Barrier(len(forms))
    statuses: list[int] = []

    def post(form: Any) -> None:
        barrier.wait(10)
        response = browser.post(urljoin(idp.base_url, form.action), data=form.submission("allow", remember=True),
                                allow_redirects=False, timeout=20)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=(form,)) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 6 and all(s == 302 or 400 <= s < 500 for s in statuses), statuses
    assert statuses.count(302) >= 1
    with core.db(idp) as session:
        rows = session.scalar(select(func.count()).select_from(Consent).where(Consent.client_id == rp.client_id))
    assert rows == 1
