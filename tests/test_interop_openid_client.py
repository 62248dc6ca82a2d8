"""Interoperability with a real FAPI 2.0 client: panva's openid-client v6 (npm) as a bank.

The Node client (tests/interop/financial_login.mjs) discovers the IdP, pushes its
authorization request with a DPoP proof and private_key_jwt, redeems the code with DPoP
(answering the IdP's nonce demand itself), validates the ES256 ID token, calls UserInfo
with the DPoP scheme and refreshes. The person logs in here with the project's software
authenticator. Skipped with the reason when node or the package is not installed
(``make interop-deps`` installs it from the committed lock file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.core import redirect_uri
from tests.support.rp import RelyingParty, _redirect_target, browser_login

INTEROP = Path(__file__).parent / "interop"
TIMEOUT = 90


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the openid-client interop test needs Node.js 20+ and npm")
    if not (INTEROP / "node_modules" / "openid-client" / "package.json").exists():
        pytest.skip("openid-client is not installed in tests/interop/node_modules (run `make interop-deps`)")
    return node


def read_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(prefix):
        process.kill()
        _, errors = process.communicate(timeout=10)
        raise AssertionError(f"openid-client said {line!r}, expected {prefix}; stderr:\n{errors}")
    return line[len(prefix):].strip()


def test_openid_client_financial_login_with_dpop_par_and_private_key_jwt(idp: Any, person: Any, browser) -> None:
    node = node_or_skip()
    rp = RelyingParty.register(idp.base_url, redirect_uri=redirect_uri(path="/openid-client/cb"),
                               rp_category="financial", token_endpoint_auth_method="private_key_jwt",
                               grant_types=["authorization_code", "refresh_token"],
                               scope="openid profile offline_access")
    assert rp.signing_key is not None
    env = {**os.environ, "IDP_ISSUER": idp.base_url, "CLIENT_ID": rp.client_id, "REDIRECT_URI": rp.redirect_uri,
           "CLIENT_JWK": json.dumps(rp.signing_key.export_private(as_dict=True))}
    process = subprocess.Popen([node, str(INTEROP / "financial_login.mjs")], cwd=INTEROP, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = read_line(process, "AUTHORIZE ")
        assert "request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3A" in url  # PAR was used
        wallet, device = person
        location = _redirect_target(browser.get(url, allow_redirects=False, timeout=30), url)
        assert location, "the authorization endpoint did not redirect"
        landed = browser_login(browser, idp.base_url, location, wallet, device, redirect_uri=rp.redirect_uri)
        assert process.stdin is not None
        process.stdin.write(f"CALLBACK {landed}\n")
        process.stdin.flush()
        result = json.loads(read_line(process, "RESULT "))
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert result["token_type"].lower() == "dpop"
    assert result["id_token_header"]["alg"] == "ES256"
    assert result["userinfo"]["sub"] == result["claims"]["sub"]
    assert result["refreshed"]["has_access_token"] and result["refreshed"]["token_type"].lower() == "dpop"
