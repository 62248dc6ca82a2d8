"""A DPoP proof is single use across worker processes and instances (RFC 9449 §11.1),
against a real multi-worker ``idp serve`` on this run's database (SQLite file or
PostgreSQL), and again with the requests spread over two instances of one deployment.

Twenty simultaneous UserInfo requests carry one proof: exactly one is answered, the others
are refused as replays. The server nonce in that proof was issued by whichever worker
(or instance) answered before, so nonces are shown to be shared by them too.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.dpop import send
from tests.support.rp import RelyingParty, browser_login
from tests.support.server import ServedIdP, parallel, statuses

N = 20


@pytest.fixture
def served_idp(spread_idp: ServedIdP) -> ServedIdP:
    return spread_idp


def test_twenty_parallel_uses_of_one_proof_exactly_one_success(served_idp: ServedIdP) -> None:
    wallet = served_idp.wallet()
    device = wallet.enroll(served_idp.card())
    bank = RelyingParty.register(served_idp.base_url, redirect_uri="http://127.0.0.1:9/bank/cb",
                                 rp_category="financial", token_endpoint_auth_method="private_key_jwt")
    with requests.Session() as browser:
        location = bank.start(browser)
        tokens = bank.finish(browser_login(browser, served_idp.base_url, location, wallet, device))
    assert tokens.token["token_type"] == "DPoP"
    endpoint = bank.provider["userinfo_endpoint"]
    assert send(bank.session, bank.dpop, "GET", endpoint, access_token=tokens.access_token,
                timeout=30).status_code == 200
    proof = bank.dpop.proof("GET", endpoint, access_token=tokens.access_token)
    headers = {"Authorization": f"DPoP {tokens.access_token}", "DPoP": proof}
    responses = parallel(lambda i: requests.get(endpoint, headers=headers, timeout=60), n=N)
    assert statuses(responses) == [200] + [401] * (N - 1), [r.text for r in responses if r.status_code != 401][:2]
    refused = [r for r in responses if r.status_code == 401]
    assert all('error="invalid_dpop_proof"' in r.headers["WWW-Authenticate"] for r in refused)
    assert all("already used" in r.json()["error_description"] for r in refused)
