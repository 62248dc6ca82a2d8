"""Request objects (OIDC Core §6) at the authorization endpoint, end to end over HTTP.

The object's members win over the query (§6.3.3); it is signed with a registered client key
or unsigned (§6.1); ``request_uri`` must be registered and is fetched once (§6.2); every
refusal with a trustworthy redirect URI is an error redirect, never a page or a 5xx.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

from tests.conftest import RunningIdP
from tests.support.rp import RelyingParty, browser_login
from tests.support.rp_host import RpHost


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


UNSIGNED_HEADER = b64(json.dumps({"alg": "none"}).encode())


def unsigned(claims: dict[str, Any]) -> str:
    return f"{UNSIGNED_HEADER}.{b64(json.dumps(claims).encode())}."


def signed(claims: dict[str, Any], key: JWK, alg: str = "RS256") -> str:
    jws = JWS(json.dumps(claims).encode())
    jws.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "kid": key.get("kid")}))
    return jws.serialize(compact=True)


def rsa() -> JWK:
    return JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(6), alg="RS256")


def register(idp: RunningIdP, host: RpHost, **metadata: Any) -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=host.url(f"/cb/{secrets.token_hex(3)}"),
                                 rp_category="municipal", **metadata)


def object_request(rp: RelyingParty, **extra: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(all parameters of a fresh request, the query parameters OAuth 2.0 requires alongside)."""
    url, *_ = rp.authorization_url(**extra)
    params = dict(parse_qsl(urlsplit(url).query))
    outer = {k: params[k] for k in ("response_type", "client_id", "scope", "redirect_uri")}
    return params, outer


def go(rp: RelyingParty, query: dict[str, str], browser: requests.Session | None = None) -> requests.Response:
    session = browser or requests.Session()
    return session.get(f"{rp.provider['authorization_endpoint']}?{urlencode(query)}", allow_redirects=False,
                       timeout=10)


def error_of(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:300]
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))


def test_unsigned_object_wins_over_the_query(idp: RunningIdP, host: RpHost, person: Any) -> None:
    """Scope, max_age (a JSON number) and claims (a JSON object) come from the object."""
    wallet, device = person
    rp = register(idp, host)
    params, outer = object_request(rp, scope="openid address")
    claims = {**params, "max_age": 600, "claims": {"id_token": {"name": None}}}
    outer["scope"] = "openid"
    browser = requests.Session()
    response = go(rp, {**outer, "request": unsigned(claims)}, browser)
    callback = browser_login(browser, idp.base_url, response.headers["Location"], wallet, device)
    result = rp.finish(callback)
    assert result.claims["name"] == "前橋\u3000太郎"  # claims.id_token from the object
    assert "address" in rp.userinfo(result.access_token)  # the object's scope


def test_signed_object_by_reference_with_fragment(idp: RunningIdP, host: RpHost, person: Any) -> None:
    wallet, device = person
    key = rsa()
    path = f"/ro/{secrets.token_hex(4)}"
    uri = host.url(path) + "#" + b64(secrets.token_bytes(32))
    rp = register(idp, host, token_endpoint_auth_method="private_key_jwt", signing_key=key, request_uris=[uri],
                  request_object_signing_alg="RS256")
    params, outer = object_request(rp)
    host.put(path, signed({**params, "iss": rp.client_id, "aud": idp.base_url}, key),
             content_type="application/oauth-authz-req+jwt")
    browser = requests.Session()
    response = go(rp, {**outer, "request_uri": uri}, browser)
    callback = browser_login(browser, idp.base_url, response.headers["Location"], wallet, device)
    assert rp.finish(callback).claims["aud"] == rp.client_id
    assert host.received(path, method="GET"), "the OP fetched the registered request_uri"


@pytest.mark.parametrize(("case", "error"), [
    ("both", "invalid_request"),
    ("encrypted", "invalid_request_object"),
    ("client_id", "invalid_request_object"),
    ("iss", "invalid_request_object"),
    ("aud", "invalid_request_object"),
    ("expired", "invalid_request_object"),
    ("bad_signature", "invalid_request_object"),
    ("unsigned_but_registered_alg", "invalid_request_object"),
    ("unregistered_uri", "invalid_request_uri"),
    ("long_uri", "invalid_request_uri"),
])
def test_refusals_are_error_redirects(idp: RunningIdP, host: RpHost, case: str, error: str) -> None:
    key = rsa()
    rp = register(idp, host, token_endpoint_auth_method="private_key_jwt", signing_key=key,
                  request_object_signing_alg="RS256")
    params, outer = object_request(rp)
    good = {**params, "iss": rp.client_id, "aud": idp.base_url}
    query: dict[str, str] = {**outer, "state": params["state"]}
    if case == "both":
        query.update(request=signed(good, key), request_uri="https://rp.example/r")
    elif case == "encrypted":
        query["request"] = "a.b.c.d.e"
    elif case == "client_id":
        query["request"] = signed({**good, "client_id": "someone-else"}, key)
    elif case == "iss":
        query["request"] = signed({**good, "iss": "someone-else"}, key)
    elif case == "aud":
        query["request"] = signed({**good, "aud": "https://other.example"}, key)
    elif case == "expired":
        query["request"] = signed({**good, "exp": int(time.time()) - 3600}, key)
    elif case == "bad_signature":
        query["request"] = signed(good, rsa())
    elif case == "unsigned_but_registered_alg":
        query["request"] = unsigned(good)
    elif case == "unregistered_uri":
        query["request_uri"] = host.url("/not-registered")
    elif case == "long_uri":
        query["request_uri"] = "https://rp.example/" + "x" * 600
    answer = error_of(go(rp, query))
    assert answer["error"] == error
    assert answer["state"] == params["state"]
    assert answer["iss"] == idp.base_url


def test_state_of_a_refused_object_is_echoed_when_only_the_object_has_one(idp: RunningIdP, host: RpHost) -> None:
    rp = register(idp, host)
    params, outer = object_request(rp)
    answer = error_of(go(rp, {**outer, "request": unsigned({**params, "exp": 1})}))
    assert answer["error"] == "invalid_request_object"
    assert answer["state"] == params["state"]


def test_an_invalid_object_with_an_untrusted_redirect_gets_a_page(idp: RunningIdP, host: RpHost) -> None:
    rp = register(idp, host)
    _, outer = object_request(rp)
    response = go(rp, {**outer, "redirect_uri": "https://evil.example/cb", "request": "not-a-jwt"})
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_a_request_object_can_be_pushed(idp: RunningIdP, host: RpHost, person: Any) -> None:
    """RFC 9126 §3: a pushed request may be a request object; it is verified when pushed."""
    wallet, device = person
    rp = register(idp, host)
    params, _ = object_request(rp)
    pushed = requests.post(rp.provider["pushed_authorization_request_endpoint"],
                           data={"client_id": rp.client_id, "request": unsigned(params)}, auth=rp.client_auth(),
                           timeout=10)
    assert pushed.status_code == 201, pushed.text
    browser = requests.Session()
    response = go(rp, {"client_id": rp.client_id, "request_uri": pushed.json()["request_uri"]}, browser)
    callback = browser_login(browser, idp.base_url, response.headers["Location"], wallet, device)
    assert rp.finish(callback).claims["sub"]
    bad = requests.post(rp.provider["pushed_authorization_request_endpoint"],
                        data={"client_id": rp.client_id, "request": "x.y.z"}, auth=rp.client_auth(), timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request_object"
