"""Garbage at every endpoint gets a 4xx in the protocol's format, never a 5xx (PROTOCOL "Encodings")."""

from __future__ import annotations

import json
import random

import pytest
import requests

GARBAGE = [None, "", "x", 0, -1, 2**70, 1.5, True, [], {}, [1, "a"], {"a": {"b": []}}, "\u0000", "é" * 5000,
           "%00", "../../etc/passwd", "A" * 70000]
JSON_ENDPOINTS = {
    "/enroll/begin": [],
    "/enroll/finish": ["enrollment_id", "credential", "jpki", "renewal", "model_hint"],
    "/enroll/activate": ["enrollment_id", "credential"],
    "/login/options": ["txn"],
    "/login/assertion": ["txn", "credential"],
    "/register": ["rp_category", "redirect_uris", "jwks", "jwks_uri", "sector_identifier_uri", "client_name",
                  "token_endpoint_auth_method", "grant_types", "default_max_age", "request_uris"],
}
FORM_ENDPOINTS = {
    "/token": ["grant_type", "code", "redirect_uri", "client_id", "client_secret", "code_verifier",
               "client_assertion", "client_assertion_type", "refresh_token"],
    "/revoke": ["token", "token_type_hint", "client_id"],
    "/introspect": ["token", "client_id"],
    "/par": ["client_id", "response_type", "scope", "request", "claims"],
    "/userinfo": ["access_token"],
    "/consent": ["txn", "csrf_token", "decision"],
    "/logout": ["id_token_hint", "post_logout_redirect_uri", "state", "client_id"],
}
QUERY_ENDPOINTS = {
    "/authorize": ["client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "prompt", "max_age",
                   "claims", "request", "request_uri", "id_token_hint", "code_challenge", "code_challenge_method"],
    "/login": ["txn"], "/login/status": ["txn"], "/consent": ["txn"], "/login/wallet": ["txn"],
    "/logout": ["id_token_hint", "post_logout_redirect_uri", "state"],
}


def _value(rng: random.Random) -> object:
    return rng.choice(GARBAGE)


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _check(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: HTTP {response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        assert set(body) >= {"error", "error_description"}, what


@pytest.mark.parametrize("seed", range(3))
def test_garbage_never_reaches_a_server_error(idp, seed):
    rng = random.Random(seed)
    with requests.Session() as http:
        for path, fields in JSON_ENDPOINTS.items():
            for _ in range(8):
                body = {f: _value(rng) for f in fields if rng.random() < 0.7}
                _check(http.post(idp.base_url + path, json=body, timeout=10), f"POST {path} {body!r:.200}")
            _check(http.post(idp.base_url + path, data=b"{not json", timeout=10,
                             headers={"Content-Type": "application/json"}), f"POST {path} bad JSON")
        for path, fields in FORM_ENDPOINTS.items():
            for _ in range(8):
                form = {f: _text(_value(rng)) for f in fields if rng.random() < 0.7}
                auth = ("x" * rng.randint(0, 80), "y") if rng.random() < 0.3 else None
                _check(http.post(idp.base_url + path, data=form, auth=auth, timeout=10), f"POST {path} {form!r:.200}")
        for path, fields in QUERY_ENDPOINTS.items():
            for _ in range(8):
                params = {f: _text(_value(rng))[:3000] for f in fields if rng.random() < 0.7}
                _check(http.get(idp.base_url + path, params=params, timeout=10, allow_redirects=False),
                       f"GET {path} {params!r:.200}")
        _check(http.post(idp.base_url + "/ca/ocsp", data=rng.randbytes(300), timeout=10,
                         headers={"Content-Type": "application/ocsp-request"}), "OCSP garbage")
        _check(http.get(idp.base_url + "/register/" + "x" * 300, headers={"Authorization": "Bearer x"}, timeout=10),
               "client read")


def test_nul_characters_are_refused_before_any_view(idp):
    with requests.Session() as http:
        page = http.get(f"{idp.base_url}/authorize", params={"client_id": "a\x00b"}, allow_redirects=False,
                        headers={"Accept": "text/html"}, timeout=10)
        assert page.status_code == 400 and "Location" not in page.headers and "<html" in page.text
        for path, body in (("/register", {"rp_category": "municipal", "client_name": "x\x00"}),
                           ("/login/options", {"txn": "\x00"}), ("/enroll/finish", {"enrollment_id": "\x00"})):
            response = http.post(idp.base_url + path, json=body, timeout=10)
            assert response.status_code == 400 and response.json()["error"] == "invalid_request", path
        status = http.get(f"{idp.base_url}/login/status", params={"txn": "\x00"}, timeout=10)
        assert status.status_code == 400
