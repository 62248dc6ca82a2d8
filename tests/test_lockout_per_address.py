"""Lock-out that cannot be turned against the owner (PROTOCOL §6, §7.6).

Credential IDs are not secrets. Failures are counted per credential and client address,
the forwarded one behind ``IDP_PROXY_HOPS`` trusted proxies: an attacker who knows the
credential ID locks it for their own address only, while its owner logs in from theirs.
Real server, real proxy headers.
"""

from __future__ import annotations

import secrets

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from idp.device.assertions import FAILURES_BEFORE_LOCK
from tests.support.core import txn_of
from tests.support.rp import RelyingParty, browser_login
from tests.support.server import ServedIdP, serve_idp

ATTACKER, OWNER = "203.0.113.66", "198.51.100.7"


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory, jpki_ca):
    with serve_idp(tmp_path_factory.mktemp("proxied"), jpki_ca, env={"IDP_PROXY_HOPS": "1"}) as server:
        yield server


def _from(address: str) -> requests.Session:
    session = requests.Session()
    session.headers["X-Forwarded-For"] = address
    return session


def _assertion(server: ServedIdP, rp: RelyingParty, device, address: str, **overrides) -> requests.Response:
    browser = _from(address)
    location = rp.start(browser)
    txn = txn_of(location)
    wallet = server.wallet(browser)
    options = wallet.login_options(txn)
    credential = device.authenticator.get(options["publicKey"], credential_id=device.credential_id, **overrides)
    return wallet.post("/login/assertion", {"txn": txn, "credential": credential})


def test_a_credential_locked_from_one_address_logs_in_from_another(behind_proxy: ServedIdP) -> None:
    server = behind_proxy
    device = server.wallet().enroll(server.card())
    rp = RelyingParty.register(server.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{secrets.token_hex(4)}",
                               rp_category="municipal")
    forger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(FAILURES_BEFORE_LOCK):
        assert _assertion(server, rp, device, ATTACKER, sign_with=forger).status_code == 400
    # Guessing from that place is stopped: even a genuine signature sent from there is refused.
    locked = _assertion(server, rp, device, ATTACKER)
    assert locked.status_code == 423 and locked.json()["error"] == "credential_locked"
    # The owner, elsewhere, is not locked out.
    owner = _from(OWNER)
    result = rp.finish(browser_login(owner, server.base_url, rp.start(owner), server.wallet(owner), device))
    assert result.access_token
    assert _assertion(server, rp, device, ATTACKER).status_code == 423  # and the attacker still is
