"""FAPI 2.0 Security Profile policy for financial clients, over real HTTP.

Strong algorithms only (§5.4.1: RS256 refused at registration and at use), ES256 ID tokens
by default, codes of at most 60 seconds, and the per-client registration metadata
``require_pushed_authorization_requests`` (RFC 9126 §6) and ``dpop_bound_access_tokens``
(RFC 9449 §5.2).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import requests
from jwcrypto.jwk import JWK
from jwcrypto.jwt import JWT

from idp.storage.models import AuthorizationTransaction, utcnow
from tests.support.core import callback, db, error_of, redirect_uri, register
from tests.support.rp import ASSERTION_TYPE, AuthorizationError, RelyingParty, RPError, post_registration


def rsa_key_without_alg() -> tuple[JWK, dict]:
    key = JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(6))
    public = json.loads(key.export_public())
    return key, public


def signed(key: JWK, alg: str, claims: dict) -> str:
    token = JWT(header={"alg": alg, "kid": key.get("kid")}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def financial_body(**extra: Any) -> dict:
    key = JWK.generate(kty="EC", crv="P-256", kid="k1")
    return {"redirect_uris": [redirect_uri()], "rp_category": "financial",
            "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [json.loads(key.export_public())]},
            **extra}


@pytest.mark.parametrize("field", ["id_token_signed_response_alg", "userinfo_signed_response_alg",
                                   "request_object_signing_alg", "token_endpoint_auth_signing_alg"])
def test_financial_registration_refuses_rs256(idp, field):
    response = post_registration(idp.base_url, financial_body(**{field: "RS256"}), session=requests.Session())
    assert error_of(response, status=400, error="invalid_client_metadata")["error_description"].find(field) >= 0
    other = post_registration(idp.base_url, {**financial_body(**{field: "RS256"}), "rp_category": "municipal",
                                             "token_endpoint_auth_method": "private_key_jwt"},
                              session=requests.Session())
    assert other.status_code == 201, other.text  # only FAPI categories are restricted


def test_financial_registration_refuses_an_rs256_key(idp):
    _, public = rsa_key_without_alg()
    response = post_registration(idp.base_url, financial_body(jwks={"keys": [{**public, "alg": "RS256"}]}),
                                 session=requests.Session())
    assert error_of(response, status=400, error="invalid_client_metadata")


def test_financial_client_without_alg_gets_es256_id_tokens(idp, person, browser):
    rp = register(idp, "financial", token_endpoint_auth_method="private_key_jwt")
    assert rp.client["id_token_signed_response_alg"] == "ES256"
    wallet, device = person
    tokens = rp.finish(callback(idp, browser, rp, device, wallet=wallet))
    assert tokens.header["alg"] == "ES256"


def test_financial_codes_live_at_most_sixty_seconds(idp, person, browser):
    rp = register(idp, "financial", token_endpoint_auth_method="private_key_jwt")
    wallet, device = person
    callback(idp, browser, rp, device, wallet=wallet)
    with db(idp) as session:
        row = session.query(AuthorizationTransaction).filter(AuthorizationTransaction.client_id == rp.client_id,
                                                             AuthorizationTransaction.code_hash.is_not(None)).one()
        assert (row.code_expires_at - utcnow()).total_seconds() <= 60


@pytest.fixture(scope="module")
def rsa_bank(idp: Any) -> tuple[RelyingParty, JWK]:
    """A financial client whose only key is RSA (registered without an alg, which is allowed)."""
    key, public = rsa_key_without_alg()
    rp = register(idp, "financial", token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public]})
    rp.signing_key = key
    return rp, key


def test_rs256_request_object_from_a_financial_client_is_refused(idp, rsa_bank):
    rp, key = rsa_bank
    now = int(time.time())
    claims = {"iss": rp.client_id, "aud": idp.base_url, "client_id": rp.client_id, "response_type": "code",
              "scope": "openid", "redirect_uri": rp.redirect_uri, "state": "s", "nonce": "n", "exp": now + 60,
              "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
    for alg, expected in (("RS256", "invalid_request_object"), ("PS256", None)):
        assertion = signed(key, "PS256", {"iss": rp.client_id, "sub": rp.client_id, "aud": idp.base_url,
                                          "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + 60})
        response = requests.post(rp.provider["pushed_authorization_request_endpoint"], timeout=10, data={
            "client_id": rp.client_id, "request": signed(key, alg, claims),
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        if expected:
            assert error_of(response, status=400, error=expected)["error_description"].find("PS256") >= 0
        else:
            assert response.status_code == 201, response.text


def test_rs256_client_assertion_from_a_financial_client_is_refused(idp, rsa_bank):
    rp, key = rsa_bank
    now = int(time.time())
    for alg in ("RS256", "PS256"):
        assertion = signed(key, alg, {"iss": rp.client_id, "sub": rp.client_id, "aud": idp.base_url,
                                      "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + 60})
        response = requests.post(rp.provider["token_endpoint"], timeout=10, data={
            "grant_type": "authorization_code", "code": "unknown", "redirect_uri": rp.redirect_uri,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        body = error_of(response)
        assert body["error"] == ("invalid_client" if alg == "RS256" else "invalid_grant"), body


def test_require_pushed_authorization_requests_per_client(idp, browser):
    rp = register(idp, "municipal", require_pushed_authorization_requests=True)
    assert rp.client["require_pushed_authorization_requests"] is True
    location = rp.start(browser, par=False)
    with pytest.raises(AuthorizationError) as refused:
        rp.parse_callback(location)
    assert refused.value.error == "invalid_request" and "pushed" in (refused.value.description or "")
    with pytest.raises(RPError) as bad:
        register(idp, "municipal", require_pushed_authorization_requests="yes")
    assert bad.value.error == "invalid_client_metadata"


def test_dpop_bound_access_tokens_per_client(idp, person, browser):
    rp = register(idp, "municipal", dpop_bound_access_tokens=True)
    wallet, device = person
    request, params = rp.parse_callback(callback(idp, browser, rp, device, wallet=wallet))
    response = rp.token_request({"grant_type": "authorization_code", "code": params["code"],
                                 "redirect_uri": request.redirect_uri, "code_verifier": request.code_verifier})
    assert error_of(response, status=400, error="invalid_dpop_proof")
