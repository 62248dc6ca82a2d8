"""Cross-device sessions are scoped (OAuth Cross-Device Flows Security BCP; PROTOCOL §4.5):
an approval relayed to a victim's phone logs the attacker's browser in to that one RP
request only, never to /account or to other RPs by single sign-on."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import requests

from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import browser_login

HTML = {"Accept": "text/html", "Accept-Language": "en"}


def test_a_relayed_cross_device_approval_gives_no_account_access_and_no_sso(idp: RunningIdP) -> None:
    victim = idp.wallet()  # the phone, with its own cookies
    device = core.enrol(idp, wallet=victim)
    rp, other_rp = core.register(idp), core.register(idp)
    attacker = requests.Session()
    callback = browser_login(attacker, idp.base_url, rp.start(attacker), victim, device, same_device=False)
    assert "code" in dict(parse_qsl(urlsplit(callback).query)), "the relayed request itself is answered"
    account = attacker.get(idp.base_url + "/account", headers=HTML, timeout=10)
    assert account.status_code == 200 and 'data-action="passkey"' in account.text
    assert 'data-role="devices"' not in account.text, "the account pages need a same-device signature"
    exported = attacker.post(idp.base_url + "/account/export", headers=HTML, timeout=10, allow_redirects=False)
    assert exported.status_code != 200 or "attachment" not in exported.headers.get("Content-Disposition", "")
    silent = dict(parse_qsl(urlsplit(other_rp.start(attacker, prompt="none")).query))
    assert silent.get("error") == "login_required", silent


def test_a_same_device_login_keeps_single_sign_on_and_the_account_pages(idp: RunningIdP) -> None:
    wallet = idp.wallet()
    device = core.enrol(idp, wallet=wallet)
    rp, other_rp = core.register(idp), core.register(idp)
    browser = requests.Session()
    browser_login(browser, idp.base_url, rp.start(browser), wallet, device)
    assert 'data-role="devices"' in browser.get(idp.base_url + "/account", headers=HTML, timeout=10).text
    other_rp.start(browser, prompt="none")  # a consent_required error or a code, but not login_required
    assert dict(parse_qsl(urlsplit(other_rp.start(browser, prompt="none")).query)).get("error") != "login_required"


def test_the_phone_page_says_who_asks_and_when(idp: RunningIdP) -> None:
    rp = core.register(idp, client_name="Relay Test Clinic")
    browser = requests.Session()
    txn = core.txn_of(rp.start(browser))
    phone = requests.get(f"{idp.base_url}/login/wallet?txn={txn}", headers=HTML, timeout=10).text
    assert "Relay Test Clinic" in phone and 'data-role="requested-at"' in phone
    assert 'data-role="relay-warning"' in phone
    options = requests.post(idp.base_url + "/login/options", json={"txn": txn}, timeout=10).json()
    assert options["rp"]["name"] == "Relay Test Clinic" and isinstance(options["requested_at"], int)
