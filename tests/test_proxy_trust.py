"""Behind a TLS-terminating reverse proxy on another host (IDP_PROXY_HOPS, PROTOCOL §7.6):
the client endpoints answer 2xx/4xx, never 5xx, and trust X-Forwarded-* only as configured."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests

from tests.conftest import RunningIdP, start_idp

ISSUER = "https://idp.example"
TOKEN = "m" * 40
# The proxy reaches the IdP by an internal name: without trusting X-Forwarded-Proto/-Host
# authlib sees http://backend.internal/... and refuses it as insecure transport.
PROXIED = {"Host": "backend.internal", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7",
           "X-Forwarded-Host": "idp.example"}
ENDPOINTS = ("/token", "/revoke", "/introspect", "/par")


def _start(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any, hops: str) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp(f"proxy{hops}"), jpki_ca,
                         env={"IDP_ISSUER": ISSUER, "IDP_REGISTRATION_TOKEN": TOKEN, "IDP_PROXY_HOPS": hops,
                              "IDP_ALLOW_HTTP_LOOPBACK": "0"})


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any) -> Iterator[RunningIdP]:
    yield from _start(tmp_path_factory, jpki_ca, "1")


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any) -> Iterator[RunningIdP]:
    yield from _start(tmp_path_factory, jpki_ca, "0")


def _client(idp: RunningIdP, headers: dict[str, str]) -> dict[str, Any]:
    response = requests.post(idp.base_url + "/register", timeout=10, headers={**headers, "Authorization": f"Bearer {TOKEN}"},
                             json={"rp_category": "municipal", "redirect_uris": ["https://rp.example/cb"],
                                   "token_endpoint_auth_method": "client_secret_basic"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_behind_the_proxy_client_endpoints_answer_without_server_errors(proxied: RunningIdP, path: str) -> None:
    client = _client(proxied, PROXIED)
    auth = (client["client_id"], client["client_secret"])
    bodies = {"/token": {"grant_type": "authorization_code", "code": "nope", "redirect_uri": "https://rp.example/cb",
                         "code_verifier": "v" * 43},
              "/revoke": {"token": "unknown"}, "/introspect": {"token": "unknown"},
              "/par": {"response_type": "code", "scope": "openid", "redirect_uri": "https://rp.example/cb",
                       "code_challenge": "c" * 43, "code_challenge_method": "S256"}}
    response = requests.post(proxied.base_url + path, data=bodies[path], auth=auth, headers=PROXIED, timeout=10)
    assert response.status_code < 500, response.text
    expected = {"/token": 400, "/revoke": 200, "/introspect": 200, "/par": 201}[path]
    assert response.status_code == expected, response.text
    if path == "/introspect":
        assert response.json() == {"active": False}
    if path == "/par":
        assert response.json()["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_without_a_trusted_proxy_client_endpoints_answer_without_server_errors(direct: RunningIdP,
                                                                              path: str) -> None:
    """IDP_PROXY_HOPS=0: no forwarded header is believed; the endpoints' URLs come from the
    issuer, so a request reaching the IdP under another host name still gets a JSON answer."""
    client = _client(direct, {})
    response = requests.post(direct.base_url + path, data={"token": "x", "grant_type": "refresh_token",
                                                           "refresh_token": "x", "response_type": "code"},
                             auth=(client["client_id"], client["client_secret"]), headers=PROXIED, timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


def test_forwarded_headers_do_not_change_the_urls_the_idp_publishes(proxied: RunningIdP) -> None:
    metadata = requests.get(proxied.base_url + "/.well-known/openid-configuration", timeout=10,
                            headers={**PROXIED, "X-Forwarded-Host": "evil.example"}).json()
    assert metadata["issuer"] == ISSUER and metadata["token_endpoint"] == ISSUER + "/token"


def test_pages_carry_the_security_headers_and_https_cookies_are_host_prefixed(proxied: RunningIdP) -> None:
    response = requests.get(proxied.base_url + "/", headers=PROXIED, timeout=10)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    lang = requests.get(proxied.base_url + "/?lang=en", headers=PROXIED, timeout=10, allow_redirects=False)
    for cookie in lang.raw.headers.getlist("Set-Cookie"):
        assert "Secure" in cookie, cookie


def test_with_an_https_issuer_the_browser_cookie_is_host_prefixed(proxied: RunningIdP) -> None:
    client = _client(proxied, PROXIED)
    response = requests.get(proxied.base_url + "/authorize", headers=PROXIED, timeout=10, allow_redirects=False,
                            params={"client_id": client["client_id"], "response_type": "code", "scope": "openid",
                                    "redirect_uri": "https://rp.example/cb", "code_challenge": "c" * 43,
                                    "code_challenge_method": "S256", "nonce": "n", "state": "s"})
    assert response.status_code == 302, response.text
    cookies = response.raw.headers.getlist("Set-Cookie")
    binding = [c for c in cookies if c.startswith("__Host-idp_browser=")]
    assert binding and "Secure" in binding[0] and "Path=/" in binding[0] and "Domain" not in binding[0], cookies
