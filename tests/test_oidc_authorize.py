"""Authorization-request rules (OIDC Core §3.1.2) and client authentication details."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from jwcrypto.jwk import JWK

from tests.conftest import RunningIdP
from tests.support.rp import RelyingParty, browser_login
from tests.support.rp_host import RpHost

ACR_UV = "urn:x-jp-digital-id:acr:device-certificate-uv"


def register(idp: RunningIdP, host: RpHost, **metadata: Any) -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=host.url(f"/cb/{secrets.token_hex(3)}"),
                                 rp_category="municipal", **metadata)


def answer(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:300]
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))


def test_essential_acr(idp: RunningIdP, host: RpHost, person: Any) -> None:
    """§5.5.1.1: an essential acr this OP can reach is returned; one it cannot is refused."""
    wallet, device = person
    rp = register(idp, host)
    browser = requests.Session()
    claims = {"id_token": {"acr": {"essential": True, "values": [ACR_UV]}}}
    result = rp.finish(browser_login(browser, idp.base_url, rp.start(browser, claims=claims), wallet, device))
    assert result.claims["acr"] == ACR_UV
    impossible = {"id_token": {"acr": {"essential": True, "values": ["urn:example:loa:4"]}}}
    url, state, *_ = rp.authorization_url(claims=impossible)
    refused = answer(requests.get(url, allow_redirects=False, timeout=10))
    assert refused["error"] == "access_denied" and refused["state"] == state


def test_select_account_and_login_prompt_for_a_new_sign_in(idp: RunningIdP, host: RpHost, person: Any) -> None:
    wallet, device = person
    rp = register(idp, host)
    browser = requests.Session()
    rp.finish(browser_login(browser, idp.base_url, rp.start(browser), wallet, device))
    for prompt in ("select_account", "login"):
        location = rp.start(browser, prompt=prompt)
        assert urlsplit(location).path == "/login"
        rp._pending.clear()


def test_a_hint_for_someone_else_with_prompt_none_is_login_required(idp: RunningIdP, host: RpHost,
                                                                     person: Any) -> None:
    wallet, device = person
    rp = register(idp, host)
    mine = requests.Session()
    rp.finish(browser_login(mine, idp.base_url, rp.start(mine), wallet, device))
    other_wallet = idp.wallet()
    other_device = other_wallet.enroll(idp.card(name="高崎　花子"))
    theirs = requests.Session()
    hint = rp.finish(browser_login(theirs, idp.base_url, rp.start(theirs), other_wallet, other_device)).id_token
    url, *_ = rp.authorization_url(prompt="none", id_token_hint=hint)
    assert answer(mine.get(url, allow_redirects=False, timeout=10))["error"] == "login_required"


@pytest.mark.parametrize("suffix", ["&scope=openid", "&nonce=" + "n" * 5000, "&state2=" + "s" * 5000])
def test_malformed_requests_from_a_known_client_are_redirected(idp: RunningIdP, host: RpHost, suffix: str) -> None:
    rp = register(idp, host)
    url, state, *_ = rp.authorization_url(nonce=False)
    result = answer(requests.get(url + suffix, allow_redirects=False, timeout=10))
    assert result["error"] == "invalid_request" and result["state"] == state


def _pk_client(idp: RunningIdP, host: RpHost, key: JWK, **metadata: Any) -> RelyingParty:
    return register(idp, host, token_endpoint_auth_method="private_key_jwt", signing_key=key, **metadata)


def test_private_key_jwt_with_ps256_and_the_registered_alg(idp: RunningIdP, host: RpHost) -> None:
    """Discovery advertises ES256, RS256 and PS256 client assertions; a registered
    token_endpoint_auth_signing_alg is enforced (Registration 1.0 §2)."""
    assert "PS256" in requests.get(idp.base_url + "/.well-known/openid-configuration",
                                   timeout=10).json()["token_endpoint_auth_signing_alg_values_supported"]
    key = JWK.generate(kty="RSA", size=2048, kid="ps", alg="PS256")
    rp = _pk_client(idp, host, key)
    response = rp.token_request({"grant_type": "authorization_code", "code": "unknown", "redirect_uri": rp.redirect_uri,
                                 "code_verifier": "v" * 43})
    assert response.json()["error"] == "invalid_grant"  # authenticated, then the code is refused
    pinned = _pk_client(idp, host, JWK.generate(kty="RSA", size=2048, kid="rs", alg="RS256"),
                        token_endpoint_auth_signing_alg="PS256")
    refused = pinned.token_request({"grant_type": "authorization_code", "code": "unknown",
                                    "redirect_uri": pinned.redirect_uri, "code_verifier": "v" * 43})
    assert refused.status_code in (400, 401) and refused.json()["error"] == "invalid_client"  # RFC 6749 §5.2
    assert json.dumps(refused.json()).isascii()
