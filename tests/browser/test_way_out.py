"""A way out and a way back, in a real browser at a phone's size: cancel on the login page
(the service gets ``error=access_denied`` with its ``state`` and ``iss``), "the numbers
differ — stop" on the phone (the computer is told), and recovery after losing the phone
with only the My Number Card (same account, same ``sub``, the old phone stopped).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.browser.conftest import Axe, inspect
from tests.browser.test_person import enrol, open_rp, sign_in_at_rp
from tests.conftest import RunningIdP


def test_cancel_on_login_returns_access_denied_and_state(browser_idp: RunningIdP, new_person: Any,
                                                         axe: Axe) -> None:
    person = new_person("ja-JP", authenticator=False, screen="phone")
    page = person.page
    authorize: list[str] = []
    page.on("request", lambda r: authorize.append(r.url) if "/authorize?" in r.url else None)
    open_rp(person, browser_idp, "municipal")
    page.click('[data-action="rp-login"]')
    page.wait_for_url(re.compile(r"/login\?"))
    page.click('[data-action="cancel"]')
    page.wait_for_selector('[data-role="rp-error"]')
    answer = parse_qs(urlsplit(page.url).query)
    sent = parse_qs(urlsplit(authorize[0]).query)
    assert answer["error"] == ["access_denied"]
    assert answer["state"] == sent["state"] and answer["iss"] == [browser_idp.settings.issuer]
    assert "code" not in answer
    page.go_back()  # the sign-in is over: the login page now says so and names the next step
    page.reload()
    assert page.locator('[data-role="next-step"]').is_visible()


def test_numbers_differ_stops_the_sign_in_on_the_computer(browser_idp: RunningIdP, new_person: Any,
                                                          axe: Axe) -> None:
    computer = new_person("ja-JP", authenticator=False)
    phone = new_person("ja-JP", authenticator=False, screen="phone")
    open_rp(computer, browser_idp, "transport")
    computer.page.click('[data-action="rp-login"]')
    computer.page.wait_for_url(re.compile(r"/login\?"))
    wallet_url = computer.page.get_attribute('a[data-role="wallet-link"]', "href")
    phone.page.goto(wallet_url)
    # The computer sees the phone open the sign-in (live progress), then the stop.
    computer.page.wait_for_selector('#progress li[data-step="opened"][aria-current="step"]', timeout=10_000)
    phone.page.click('[data-action="mismatch"]')
    phone.page.wait_for_selector("#approve-actions", state="hidden")
    problems: list[str] = []
    inspect(phone.page, axe, "approve-stopped-phone", problems)
    outcome = computer.page.locator("#outcome")
    outcome.wait_for(state="visible", timeout=10_000)
    assert "番号" in (outcome.text_content() or "")
    inspect(computer.page, axe, "login-stopped-desktop", problems, main_action='[data-action="retry"]')
    assert not problems, "\n".join(problems)


def test_recover_with_only_the_card_after_losing_the_phone(browser_idp: RunningIdP, new_person: Any,
                                                           axe: Axe) -> None:
    old_phone = new_person("ja-JP", screen="phone")
    old_serial = enrol(old_phone, browser_idp, axe, "taro")
    before = sign_in_at_rp(old_phone, browser_idp, axe, "municipal", screenshots=False)

    new_phone = new_person("ja-JP", screen="phone")  # nothing carried over: only the card
    new_serial = enrol(new_phone, browser_idp, axe, "taro", recover=True)
    assert new_phone.page.locator("#enrol-recovered").is_visible()
    after = sign_in_at_rp(new_phone, browser_idp, axe, "municipal", screenshots=False)
    assert after["sub"] == before["sub"] and new_serial != old_serial

    page = new_phone.page
    page.goto(f"{browser_idp.base_url}/account")
    assert page.get_attribute(f'[data-serial="{old_serial}"]', "data-state") == "revoked"
    assert page.get_attribute(f'[data-serial="{new_serial}"]', "data-state") == "active"

    open_rp(old_phone, browser_idp, "municipal")  # the lost phone can no longer sign in
    old_phone.page.click('[data-action="rp-login"]')
    old_phone.page.wait_for_url(re.compile(r"/login\?"))
    old_phone.page.click('[data-action="passkey"]')
    old_phone.page.locator("#outcome").wait_for(state="visible")
    assert old_phone.page.locator('[data-action="retry"]').count() == 1
