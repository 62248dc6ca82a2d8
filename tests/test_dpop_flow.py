"""DPoP-bound tokens over real HTTP (RFC 9449; FAPI 2.0 for the financial category).

Token endpoint (authorization code and refresh grants), PAR and ``dpop_jkt`` binding the
code, UserInfo with ``Authorization: DPoP``, introspection ``cnf.jkt``, server nonces, and
replay: twenty simultaneous uses of one proof, exactly one accepted.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from idp.storage.models import AuthorizationTransaction, Token
from tests.support.core import callback, db, error_of, register
from tests.support.dpop import DPoPKey, send
from tests.support.rp import AuthorizationError, RelyingParty, RPError

PARALLEL = 20
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B


@pytest.fixture(scope="module")
def bank(idp: Any) -> RelyingParty:
    return register(idp, "financial", token_endpoint_auth_method="private_key_jwt",
                    grant_types=["authorization_code", "refresh_token"], scope="openid profile offline_access")


def code_for(idp: Any, browser: requests.Session, rp: RelyingParty, person: Any, **extra: Any) -> tuple[Any, str]:
    wallet, device = person
    request, params = rp.parse_callback(callback(idp, browser, rp, device, wallet=wallet, **extra))
    return request, params["code"]


def token_call(rp: RelyingParty, data: dict[str, str], proof: str | None = None) -> requests.Response:
    headers = {"Accept": "application/json"}
    if proof is not None:
        headers["DPoP"] = proof
    return rp.session.post(rp.provider["token_endpoint"], data=data, auth=rp.client_auth(), headers=headers,
                           timeout=rp.timeout)


def code_grant(request: Any, code: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier}


@pytest.fixture(scope="module")
def bank_tokens(idp: Any, bank: RelyingParty, person: Any) -> Any:
    with requests.Session() as browser:
        wallet, device = person
        return bank.finish(callback(idp, browser, bank, device, wallet=wallet, scope="openid profile offline_access"))


def test_discovery_lists_dpop_algorithms(idp):
    meta = requests.get(f"{idp.base_url}/.well-known/openid-configuration", timeout=10).json()
    assert {"ES256", "PS256"} <= set(meta["dpop_signing_alg_values_supported"])
    assert "RS256" not in meta["dpop_signing_alg_values_supported"]


def test_financial_token_request_needs_a_proof_then_a_nonce(idp, bank, person, browser):
    request, code = code_for(idp, browser, bank, person)
    missing = token_call(bank, code_grant(request, code))
    assert error_of(missing, status=400, error="invalid_dpop_proof")
    key = bank.dpop  # the key its pushed request was bound to
    key.nonce = None
    asked = token_call(bank, code_grant(request, code), key.proof("POST", bank.provider["token_endpoint"]))
    assert error_of(asked, status=400, error="use_dpop_nonce")
    nonce = asked.headers["DPoP-Nonce"]
    key.nonce = nonce
    answer = token_call(bank, code_grant(request, code), key.proof("POST", bank.provider["token_endpoint"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP"
    assert answer.headers["DPoP-Nonce"]
    with db(idp) as session:
        row = session.query(Token).filter(Token.client_id == bank.client_id).order_by(Token.id.desc()).first()
        assert row.dpop_jkt == key.jkt


def test_token_proof_checks_at_the_endpoint(idp, bank, person, browser):
    """htm, htu (from the issuer, not the Host header), signature and jti, each refused; the
    code survives a refused proof, so the client may retry."""
    request, code = code_for(idp, browser, bank, person, scope="openid profile offline_access")
    key = bank.dpop
    endpoint = bank.provider["token_endpoint"]
    key.nonce = token_call(bank, {}, None).headers["DPoP-Nonce"]
    for proof in (key.proof("GET", endpoint), key.proof("POST", endpoint.replace("/token", "/par")),
                  key.proof("POST", endpoint, signing_key=DPoPKey().key),
                  key.proof("POST", endpoint, header={"typ": "JWT"})):
        assert error_of(token_call(bank, code_grant(request, code), proof), error="invalid_dpop_proof")
    forged_host = key.proof("POST", "http://evil.example/token")
    response = bank.session.post(endpoint, data=code_grant(request, code), auth=bank.client_auth(),
                                 headers={"DPoP": forged_host, "Host": "evil.example"}, timeout=10)
    assert error_of(response, error="invalid_dpop_proof")["error_description"].find("htu") >= 0
    good = key.proof("POST", endpoint)
    answer = token_call(bank, code_grant(request, code), good)
    assert answer.status_code == 200, answer.text
    replay = token_call(bank, {"grant_type": "refresh_token", "refresh_token": answer.json()["refresh_token"]}, good)
    assert error_of(replay, error="invalid_dpop_proof")["error_description"].find("already used") >= 0


def test_userinfo_accepts_dpop_and_refuses_bearer_use(idp, bank, bank_tokens):
    endpoint = bank.provider["userinfo_endpoint"]
    token = bank_tokens.access_token
    ok = send(bank.session, bank.dpop, "GET", endpoint, access_token=token, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["sub"] == bank_tokens.sub
    bearer = bank.session.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert error_of(bearer, status=401, error="invalid_token")
    challenge = bearer.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and 'error="invalid_token"' in challenge
    body = bank.session.post(endpoint, data={"access_token": token}, timeout=10)
    assert error_of(body, status=401, error="invalid_token")


def test_userinfo_proof_must_match_request_token_and_key(idp, bank, bank_tokens):
    endpoint = bank.provider["userinfo_endpoint"]
    token = bank_tokens.access_token
    key = bank.dpop

    def call(proof: str | None, method: str = "GET") -> requests.Response:
        headers = {"Authorization": f"DPoP {token}"}
        if proof:
            headers["DPoP"] = proof
        return bank.session.request(method, endpoint, headers=headers, timeout=10)

    cases = {
        "no proof": call(None),
        "wrong htm": call(key.proof("POST", endpoint, access_token=token)),
        "wrong htu": call(key.proof("GET", bank.provider["token_endpoint"], access_token=token)),
        "no ath": call(key.proof("GET", endpoint)),
        "wrong ath": call(key.proof("GET", endpoint, access_token=token + "x")),
        "other key": call(DPoPKey().proof("GET", endpoint, access_token=token, nonce=key.nonce)),
    }
    for name, response in cases.items():
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("DPoP "), name
        assert error_of(response)["error"] == "invalid_dpop_proof", name


def test_userinfo_demands_a_nonce_for_financial_clients(idp, bank, bank_tokens):
    endpoint = bank.provider["userinfo_endpoint"]
    key = bank.dpop
    key.nonce = None
    asked = bank.session.get(endpoint, headers={"Authorization": f"DPoP {bank_tokens.access_token}",
                                                "DPoP": key.proof("GET", endpoint,
                                                                  access_token=bank_tokens.access_token)}, timeout=10)
    assert asked.status_code == 401
    assert 'error="use_dpop_nonce"' in asked.headers["WWW-Authenticate"]
    assert asked.headers["DPoP-Nonce"]
    retried = send(bank.session, key, "GET", endpoint, access_token=bank_tokens.access_token, timeout=10)
    assert retried.status_code == 200


def test_introspection_shows_the_key_confirmation(bank, bank_tokens):
    answer = bank.introspect(bank_tokens.access_token)
    assert answer["active"] and answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": bank.dpop.jkt}


def test_refresh_with_dpop_for_a_confidential_client(idp, bank, bank_tokens):
    refreshed = bank.refresh(bank_tokens.refresh_token)
    assert refreshed.token["token_type"] == "DPoP"
    assert bank.introspect(refreshed.access_token)["cnf"] == {"jkt": bank.dpop.jkt}
    without = token_call(bank, {"grant_type": "refresh_token", "refresh_token": refreshed.refresh_token})
    assert error_of(without, error="invalid_dpop_proof")
    # a confidential client's refresh token is bound by its authentication; a new key is allowed
    bank.dpop, old = DPoPKey(), bank.dpop
    try:
        moved = bank.refresh(refreshed.refresh_token)
        assert bank.introspect(moved.access_token)["cnf"] == {"jkt": bank.dpop.jkt}
    finally:
        bank.dpop = old


@pytest.fixture(scope="module")
def public_app(idp: Any) -> RelyingParty:
    rp = register(idp, "municipal", token_endpoint_auth_method="none",
                  grant_types=["authorization_code", "refresh_token"], scope="openid profile offline_access")
    rp.dpop = DPoPKey()
    return rp


def test_public_clients_refresh_tokens_are_bound_to_the_key(idp, public_app, person, browser):
    wallet, device = person
    tokens = public_app.finish(callback(idp, browser, public_app, device, wallet=wallet,
                                        scope="openid profile offline_access"))
    assert tokens.token["token_type"] == "DPoP"
    thief = DPoPKey()
    stolen = public_app.session.post(public_app.provider["token_endpoint"], data={
        "grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": public_app.client_id},
        headers={"DPoP": thief.proof("POST", public_app.provider["token_endpoint"])}, timeout=10)
    assert error_of(stolen, error="invalid_dpop_proof")
    bare = public_app.session.post(public_app.provider["token_endpoint"], data={
        "grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": public_app.client_id},
        timeout=10)
    assert error_of(bare, error="invalid_dpop_proof")
    refreshed = public_app.refresh(tokens.refresh_token)
    assert refreshed.token["token_type"] == "DPoP"


def test_other_categories_keep_bearer_tokens_without_proofs(idp, person, browser):
    rp = register(idp, "municipal")
    wallet, device = person
    tokens = rp.finish(callback(idp, browser, rp, device, wallet=wallet))
    assert tokens.token["token_type"].lower() == "bearer"
    assert "cnf" not in rp.introspect(tokens.access_token)
    assert rp.userinfo(tokens.access_token)["sub"] == tokens.sub
    refused = rp.session.get(rp.provider["userinfo_endpoint"], timeout=10, headers={
        "Authorization": f"DPoP {tokens.access_token}",
        "DPoP": DPoPKey().proof("GET", rp.provider["userinfo_endpoint"], access_token=tokens.access_token)})
    assert error_of(refused, status=401, error="invalid_token")


def code_transaction(session, rp) -> AuthorizationTransaction:
    """The newest transaction of ``rp`` that ended in a code (the code is kept on it)."""
    return session.query(AuthorizationTransaction).filter(
        AuthorizationTransaction.client_id == rp.client_id, AuthorizationTransaction.code_hash.is_not(None)) \
        .order_by(AuthorizationTransaction.code_expires_at.desc()).first()


def test_dpop_jkt_at_authorization_binds_the_code(idp, person, browser):
    rp = register(idp, "municipal", token_endpoint_auth_method="none")
    holder, other = DPoPKey(), DPoPKey()
    request, code = code_for(idp, browser, rp, person, dpop_jkt=holder.jkt)
    with db(idp) as session:
        assert code_transaction(session, rp).request["dpop_jkt"] == holder.jkt
    data = {**code_grant(request, code), "client_id": rp.client_id}
    endpoint = rp.provider["token_endpoint"]
    assert error_of(rp.session.post(endpoint, data=data, timeout=10), error="invalid_dpop_proof")
    assert error_of(rp.session.post(endpoint, data=data, headers={"DPoP": other.proof("POST", endpoint)},
                                    timeout=10), error="invalid_dpop_proof")
    answer = rp.session.post(endpoint, data=data, headers={"DPoP": holder.proof("POST", endpoint)}, timeout=10)
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP"


def test_malformed_dpop_jkt_is_refused(idp, browser):
    rp = register(idp, "municipal")
    location = rp.start(browser, dpop_jkt="not-a-thumbprint")
    with pytest.raises(AuthorizationError) as refused:
        rp.parse_callback(location)
    assert refused.value.error == "invalid_request"


def test_a_proof_at_par_binds_the_code_to_its_key(idp, bank, person, browser):
    """RFC 9449 §10.1: the RP's helper sends a DPoP proof with the push; the code is then
    only redeemable with that key, and a dpop_jkt naming another key is refused."""
    request, code = code_for(idp, browser, bank, person)
    with db(idp) as session:
        assert code_transaction(session, bank).request["dpop_jkt"] == bank.dpop.jkt
    other = DPoPKey()
    other.nonce = bank.dpop.nonce
    refused = token_call(bank, code_grant(request, code), other.proof("POST", bank.provider["token_endpoint"]))
    assert error_of(refused, error="invalid_dpop_proof")
    assert bank.exchange(code, request).token["token_type"] == "DPoP"
    mismatch = send(bank.session, bank.dpop, "POST", bank.provider["pushed_authorization_request_endpoint"],
                    data={"client_id": bank.client_id, "response_type": "code", "scope": "openid",
                          "redirect_uri": bank.redirect_uri, "code_challenge": CHALLENGE,
                          "code_challenge_method": "S256", "dpop_jkt": other.jkt},
                    auth=bank.client_auth(), timeout=10)
    assert error_of(mismatch, error="invalid_dpop_proof")


def test_twenty_parallel_uses_of_one_proof_one_success(idp, bank, person, browser):
    """RFC 9449 §11.1: one proof, twenty simultaneous requests, exactly one answered."""
    wallet, device = person
    endpoint = bank.provider["userinfo_endpoint"]
    token = bank.finish(callback(idp, browser, bank, device, wallet=wallet)).access_token
    send(bank.session, bank.dpop, "GET", endpoint, access_token=token, timeout=10)  # a current nonce
    proof = bank.dpop.proof("GET", endpoint, access_token=token)
    barrier = threading.Barrier(PARALLEL)
    statuses: list[int] = []
    errors: list[str] = []

    def use() -> None:
        with requests.Session() as session:
            barrier.wait()
            response = session.get(endpoint, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=30)
            statuses.append(response.status_code)
            if response.status_code != 200:
                errors.append(response.headers.get("WWW-Authenticate", "") + response.text)

    threads = [threading.Thread(target=use) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * (PARALLEL - 1), (statuses, errors[:2])
    assert all("already used" in error for error in errors), errors[:2]


def test_par_without_client_authentication_is_refused(idp, bank):
    response = requests.post(bank.provider["pushed_authorization_request_endpoint"], data={
        "client_id": bank.client_id, "response_type": "code", "scope": "openid",
        "redirect_uri": bank.redirect_uri}, timeout=10)
    assert error_of(response, status=401, error="invalid_client")


def test_query_of_authorization_response_carries_iss(idp, bank, person, browser):
    wallet, device = person
    location = callback(idp, browser, bank, device, wallet=wallet)
    assert dict(parse_qsl(urlsplit(location).query))["iss"] == idp.base_url
    bank.parse_callback(location)
