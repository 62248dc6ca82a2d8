"""The newcomer's demo over real HTTP: development only, the TEST card signs enrolments,
and four demo RPs log in through the real OIDC flow and show what they received.
(The same walk in a real browser with a passkey is tests/browser/.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from idp import create_app
from idp.context import initialise
from idp.demo import cards, rps
from idp.settings import Settings
from tests.conftest import RunningIdP
from tests.support.authenticator import SoftAuthenticator
from tests.support.rp import browser_login


def test_demo_does_not_exist_outside_development(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "IDP_ISSUER": "https://id.example.jp", "IDP_KEYS_DIR": str(tmp_path / "keys"),
        "IDP_INSTANCE_DIR": str(tmp_path / "instance"), "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "IDP_JPKI_TRUST_ANCHORS": str(tmp_path / "jpki"), "IDP_RATE_LIMIT_PER_MINUTE": "0",
    }, testing=True)
    initialise(settings)
    app = create_app(settings)
    try:
        client = app.test_client()
        for path in ("/demo", "/demo/", "/demo/wallet", "/demo/rp/municipal/", "/demo/rp/financial/callback"):
            assert client.get(path, headers={"Accept": "text/html"}).status_code == 404, path
        assert client.post("/demo/card/sign", json={}).status_code == 404
        assert client.post("/demo/rp/municipal/login").status_code == 404
        assert "/demo" not in client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert not (tmp_path / "keys" / "jpki-test").exists()  # no TEST JPKI CA either
    finally:
        app.extensions["idp"].db.dispose()


def enrol_with_test_card(idp: RunningIdP, browser: requests.Session, persona: str) -> tuple[SoftAuthenticator, str]:
    """What the demo wallet page does, step by step, with a software authenticator."""
    base = idp.base_url
    begun = browser.post(f"{base}/enroll/begin", json={}).json()
    authenticator = idp.authenticator()
    credential = authenticator.create(begun["publicKey"])
    signed = browser.post(f"{base}/demo/card/sign", json={"enrollment_id": begun["enrollment_id"],
                                                          "persona": persona, "credential": credential})
    assert signed.status_code == 200, signed.text
    assert signed.json()["test_card"] is True
    finished = browser.post(f"{base}/enroll/finish", json={"enrollment_id": begun["enrollment_id"],
                                                           "credential": credential, "jpki": signed.json()["jpki"]})
    assert finished.status_code == 201, finished.text
    assertion = authenticator.get(finished.json()["activation"]["publicKey"])
    activated = browser.post(f"{base}/enroll/activate", json={"enrollment_id": begun["enrollment_id"],
                                                              "credential": assertion})
    assert activated.status_code == 200, activated.text
    return authenticator, activated.json()["serial"]


def demo_login(idp: RunningIdP, browser: requests.Session, authenticator: SoftAuthenticator, category: str,
               *, consent: str | None = "allow") -> requests.Response:
    """Open the demo RP, sign in through the IdP, come back; the RP's result page."""
    rp = rps.DEMO_RPS[category]
    home = rps.rp_url(idp.settings, rp)
    started = browser.post(home + "login", allow_redirects=False)
    assert started.status_code == 303, started.text
    authorize = started.headers["Location"]
    assert authorize.startswith(idp.base_url + "/authorize?")
    if category == "financial":
        assert "request_uri=" in authorize and "code_challenge" not in authorize  # pushed (RFC 9126)
    callback = browser_login(browser, idp.base_url, authorize, idp.wallet(browser), authenticator,
                             consent=consent, redirect_uri=rps.redirect_uri(idp.settings, rp))
    return browser.get(callback, headers={"Accept": "text/html", "Accept-Language": "en"})


def shown_json(html: str, role: str) -> dict[str, Any]:
    match = re.search(rf'data-role="{role}">(.*?)</pre>', html, re.S)
    assert match, f"no {role} on the page"
    return json.loads(match.group(1).replace("&#34;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">").replace("&#39;", "'"))


def test_demo_walk_through_four_rps(idp: RunningIdP, browser: requests.Session) -> None:
    overview = browser.get(f"{idp.base_url}/demo/", headers={"Accept": "text/html"})
    assert overview.status_code == 200 and 'data-action="open-wallet"' in overview.text
    authenticator, serial = enrol_with_test_card(idp, browser, "hanako")
    seen: dict[str, dict[str, Any]] = {}
    for category in ("municipal", "medical", "financial", "transport"):
        page = demo_login(idp, browser, authenticator, category)
        assert page.status_code == 200, page.text
        seen[category] = {"id_token": shown_json(page.text, "id-token"), "userinfo": shown_json(page.text, "userinfo")}
        assert seen[category]["id_token"]["iss"] == idp.settings.issuer
        assert "hwk" in seen[category]["id_token"]["amr"]
    # Category differences (PROTOCOL §5), as each demo RP received them.
    assert seen["municipal"]["userinfo"]["address"]["formatted"].startswith("群馬県高崎市")
    assert seen["municipal"]["userinfo"]["name"] == "高崎　花子"
    assert "address" not in seen["medical"]["userinfo"] and seen["medical"]["userinfo"]["birthdate"] == "1950-05-05"
    assert seen["financial"]["userinfo"]["verified_claims"]["verification"]["trust_framework"] == "jp_aml"
    assert set(seen["transport"]["userinfo"]) == {"sub", "age_over_18", "age_over_65"}
    assert seen["transport"]["userinfo"]["age_over_65"] is True
    # Pairwise: one sector per loopback host name.
    subs = {c: v["id_token"]["sub"] for c, v in seen.items()}
    assert subs["municipal"] == subs["medical"] and subs["financial"] == subs["transport"]
    assert subs["municipal"] != subs["financial"]
    # The overview now shows them side by side for the signed-in person.
    overview = browser.get(f"{idp.base_url}/demo/", headers={"Accept": "text/html"}).text
    assert 'data-role="side-by-side"' in overview
    assert all(sub in overview for sub in subs.values())
    registered = json.loads((idp.settings.keys_dir / rps.REGISTRY_FILE).read_text())
    assert registered["financial"]["jwk"]["kty"] == "EC" and registered["financial"]["client_secret"] is None
    assert (idp.settings.keys_dir / rps.REGISTRY_FILE).stat().st_mode & 0o077 == 0


def test_declining_at_a_demo_rp_shares_nothing(idp: RunningIdP, browser: requests.Session) -> None:
    authenticator, _ = enrol_with_test_card(idp, browser, "sho")
    page = demo_login(idp, browser, authenticator, "medical", consent="deny")
    assert page.status_code == 200 and "You chose not to share" in page.text
    assert 'data-role="id-token"' not in page.text


def test_demo_rp_callback_refuses_a_response_it_did_not_ask_for(idp: RunningIdP, browser: requests.Session) -> None:
    home = rps.rp_url(idp.settings, rps.DEMO_RPS["municipal"])
    forged = browser.get(home + f"callback?code=abc&state=xyz&iss={idp.settings.issuer}",
                         headers={"Accept": "text/html", "Accept-Language": "en"})
    assert forged.status_code == 400 and 'data-step="state"' in forged.text
    assert browser.get(f"{idp.base_url}/demo/rp/nowhere/", headers={"Accept": "text/html"}).status_code == 404


@pytest.mark.parametrize("body, error", [
    ({"persona": "nobody", "enrollment_id": "x", "credential": {}}, "unknown test persona"),
    ({"persona": "taro", "enrollment_id": "unknown", "credential": {}}, "no enrolment waiting"),
    ({"persona": "taro"}, "enrollment_id"),
    ([], "JSON object"),
])
def test_card_sign_refuses_bad_input(idp: RunningIdP, body: Any, error: str) -> None:
    answer = requests.post(f"{idp.base_url}/demo/card/sign", json=body)
    assert 400 <= answer.status_code < 500 and error in answer.json()["error_description"]


def test_card_sign_refuses_a_malformed_credential(idp: RunningIdP, browser: requests.Session) -> None:
    begun = browser.post(f"{idp.base_url}/enroll/begin", json={}).json()
    answer = browser.post(f"{idp.base_url}/demo/card/sign", json={
        "persona": "taro", "enrollment_id": begun["enrollment_id"],
        "credential": {"response": {"attestationObject": "AAAA"}}})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_personas_are_clearly_test_cards(idp: RunningIdP) -> None:
    page = requests.get(f"{idp.base_url}/demo/wallet", headers={"Accept": "text/html", "Accept-Language": "ja"})
    assert page.text.count("テスト用カード") >= len(cards.PERSONAS)
    card = cards.card_for(idp.settings, cards.PERSONAS["taro"])
    assert card.certificate.extensions  # issued by the TEST JPKI CA with the test policy OID
    from idp.proofing.jpki import TEST_POLICY_OID
    assert TEST_POLICY_OID in str(card.certificate.extensions)
    assert cards.card_for(idp.settings, cards.PERSONAS["taro"]).serial_number == card.serial_number
    assert urlsplit(rps.rp_origin(idp.settings, rps.DEMO_RPS["financial"])).hostname != urlsplit(
        idp.settings.issuer).hostname
    assert urljoin(idp.base_url, "/demo/") == idp.settings.url("/demo/")
