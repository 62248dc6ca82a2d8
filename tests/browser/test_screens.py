"""Every person-facing page at a phone's size (390×844, touch) and a laptop's (1280×800):
axe-core finds no serious or critical violation, nothing scrolls sideways, the page's main
action is on the first screen, and screenshots of each land in ``tests/artifacts/``
(``<page>-<screen>.png`` is the first screen, ``…-full.png`` the whole page).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import Axe, inspect
from tests.browser.test_person import enrol, open_rp
from tests.conftest import RunningIdP


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_every_person_page_fits_the_screen(browser_idp: RunningIdP, new_person: Any, axe: Axe, screen: str) -> None:
    person = new_person("ja-JP", screen=screen)
    page = person.page
    base = browser_idp.base_url
    problems: list[str] = []
    page.goto(f"{base}/")
    inspect(page, axe, f"home-{screen}", problems)
    assert page.locator('[data-role="help-link"]').is_visible()  # help is one tap away on every page

    page.goto(f"{base}/demo/wallet")
    inspect(page, axe, f"demo-wallet-{screen}", problems, main_action='[data-action="enrol"]')
    enrol(person, browser_idp, axe, {"phone": "hanako", "desktop": "sho"}[screen])

    open_rp(person, browser_idp, "medical")
    page.click('[data-action="rp-login"]')
    page.wait_for_url(re.compile(r"/login\?"))
    login_url = page.url
    inspect(page, axe, f"login-{screen}", problems,
            main_action='[data-action="passkey"]' if screen == "phone" else 'img[data-action="qr"]')
    wallet_url = page.get_attribute('a[data-role="wallet-link"]', "href")

    page.goto(wallet_url)  # the phone's approval page (what the QR code opens)
    inspect(page, axe, f"approve-{screen}", problems, main_action='[data-action="approve"]')

    page.goto(login_url)
    page.click('[data-action="passkey"]')
    page.wait_for_url(re.compile(r"/consent\?"))
    inspect(page, axe, f"consent-{screen}", problems, main_action='button[name="decision"][value="allow"]')
    page.click('button[name="decision"][value="allow"]')
    page.wait_for_selector('[data-role="sub"]')

    page.goto(f"{base}/account")
    inspect(page, axe, f"account-{screen}", problems)
    page.locator('[data-action="revoke"]').first.click()
    page.wait_for_selector('[data-action="confirm-revoke"]')
    inspect(page, axe, f"account-revoke-{screen}", problems, main_action='[data-action="confirm-revoke"]')
    page.goto(f"{base}/account")
    page.locator('[data-action="withdraw"]').first.click()
    page.wait_for_selector('[data-action="confirm-withdraw"]')
    inspect(page, axe, f"account-withdraw-{screen}", problems, main_action='[data-action="confirm-withdraw"]')

    assert not [e for e in person.console_errors if "favicon" not in e], person.console_errors
    page.goto(f"{base}/help")
    inspect(page, axe, f"help-{screen}", problems)
    assert page.locator('[data-topic]').count() == 5
    page.goto(f"{base}/login?txn=unknown")  # an error page names the next step that can work
    inspect(page, axe, f"error-{screen}", problems)
    assert page.locator('[data-role="next-step"]').is_visible()
    assert not problems, "\n".join(problems)
