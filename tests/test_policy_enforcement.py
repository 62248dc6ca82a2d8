"""Category policy at authorization: verified_claims only where released, PKCE relaxation only
for confidential clients of a category whose operator policy allows it, and the policy acr."""

from __future__ import annotations

import re

import pytest

from idp.policy import load_policy
from tests.support.rp import AuthorizationError, RelyingParty


def _refused(rp: RelyingParty, browser, **extra) -> AuthorizationError:  # type: ignore[no-untyped-def]
    location = rp.start(browser, **extra)
    with pytest.raises(AuthorizationError) as error:
        rp.parse_callback(location)
    return error.value


@pytest.mark.parametrize("category", ["municipal", "medical", "transport"])
def test_out_of_policy_claims_are_silently_not_released(idp, category):
    """PROTOCOL §5 (and OIDC IDA 1.0: omit what cannot be provided): asking for
    ``verified_claims`` or any claim outside the category's policy is not an error; the
    claim is neither offered on the consent page nor released."""
    import requests

    from tests.support.core import txn_of

    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category=category,
                               scope="openid")
    claims = {"userinfo": {"verified_claims": {"verification": {"trust_framework": None}, "claims": {"name": None}},
                           "address": None, "name": None, "age_over_18": None}}
    wallet = idp.wallet()
    device = wallet.enroll(idp.card())
    browser = requests.Session()
    txn = txn_of(rp.start(browser, claims=claims, prompt="consent"))
    offered = wallet.with_session(browser).login(txn, authenticator=device)
    consent = browser.get(f"{idp.base_url}/consent?txn={txn}", timeout=10)
    assert consent.status_code == 200
    shown = set(re.findall(r'data-claim="([^"]+)"', consent.text))
    allowed = set(idp.services().policy[category].claims)
    assert shown and shown <= allowed and "verified_claims" not in shown
    assert offered["status"] == "authenticated"
    from tests.support.rp import parse_consent_form

    form = parse_consent_form(consent.text)
    answer = browser.post(f"{idp.base_url}{form.action}", data=form.submission("allow"), allow_redirects=False,
                          timeout=10)
    tokens = rp.finish(answer.headers["Location"])
    released = set(rp.userinfo(tokens.access_token)) - {"sub"}
    assert released == shown and "verified_claims" not in released


def test_discovery_advertises_identity_assurance(idp):
    import requests

    metadata = requests.get(f"{idp.base_url}/.well-known/openid-configuration", timeout=5).json()
    assert metadata["verified_claims_supported"] is True
    assert metadata["trust_frameworks_supported"] == ["jp_aml"]
    assert metadata["evidence_supported"] == ["electronic_signature"]
    assert set(metadata["claims_in_verified_claims_supported"]) == {"name", "birthdate", "address", "gender"}
    assert "verified_claims" in metadata["claims_supported"]


@pytest.fixture
def relaxed_pkce(idp, tmp_path):
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[categories.municipal]\nrequire_pkce = false\n")
    services = idp.services()
    original = services.policy
    services.policy = load_policy(policy_file, development=True)
    yield
    services.policy = original


def test_pkce_is_required_by_default(idp, browser):
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal")
    assert _refused(rp, browser, pkce=None).error == "invalid_request"


def test_policy_may_relax_pkce_for_confidential_clients_with_a_nonce(idp, browser, relaxed_pkce):
    confidential = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal")
    location = confidential.start(browser, pkce=None)
    assert "/login?txn=" in location
    assert _refused(confidential, browser, pkce="plain").error == "invalid_request"
    public = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal",
                                   token_endpoint_auth_method="none")
    assert _refused(public, browser, pkce=None).error == "invalid_request"


def test_certification_profile_code_flow_without_pkce_and_without_nonce(idp, browser, person, relaxed_pkce):
    """OIDC Core §3.1.2.1: nonce is optional in the code flow; with require_pkce = false a
    confidential client completes a login sending neither PKCE nor nonce."""
    from tests.support.rp import browser_login

    wallet, device = person
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal")
    location = rp.start(browser, pkce=None, nonce=False)
    assert "code_challenge" not in rp.last_request.url and "nonce=" not in rp.last_request.url
    result = rp.finish(browser_login(browser, idp.base_url, location, wallet.with_session(browser), device))
    assert "nonce" not in result.claims and result.claims["sub"]


def test_default_policy_refuses_a_code_request_without_pkce_or_nonce(idp, browser):
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal")
    assert _refused(rp, browser, pkce=None, nonce=False).error == "invalid_request"
    assert _refused(rp, browser, pkce=None).error == "invalid_request"
