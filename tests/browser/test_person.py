"""The person's side in a real browser (Chromium + WebAuthn virtual authenticator):
enrol in the demo wallet, log in at each demo RP (passkey and cross-device QR), consent,
revoke a device on the account page and see the next login refused, switch language,
and run axe-core on every page. Screenshots: tests/artifacts/*.png.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from idp.storage.models import AuthorizationTransaction, utcnow
from tests.browser.conftest import Axe, Person, shot
from tests.conftest import RunningIdP

CATEGORIES = ("municipal", "medical", "financial", "transport")


def enrol(person: Person, idp: RunningIdP, axe: Axe, persona: str, *, screenshots: bool = False,
          recover: bool = False) -> str:
    """The demo wallet: choose a TEST card, create the passkey, activate; returns the serial.
    ``recover``: "I lost my old phone" is ticked (the account's other devices are stopped)."""
    page = person.page
    page.goto(f"{idp.base_url}/demo/wallet")
    if screenshots:
        axe.check(page, "demo-wallet")
        shot(page, "demo-wallet")
    page.check(f"#persona-{persona}")
    if recover:
        page.check("#recover")
    page.click('[data-action="enrol"]')
    page.wait_for_selector('[data-role="enrolled"]:not([hidden]), #enrol-error:not([hidden])')
    assert page.locator("#enrol-error").is_hidden(), page.text_content("#enrol-error")
    serial = page.text_content("#enrol-serial") or ""
    assert re.fullmatch(r"[0-9a-f]+", serial), serial
    if screenshots:
        axe.check(page, "demo-wallet-enrolled")
        shot(page, "demo-wallet-enrolled")
    return serial


def open_rp(person: Person, idp: RunningIdP, category: str) -> None:
    page = person.page
    page.goto(f"{idp.base_url}/demo/")
    page.click(f'[data-action="open-rp"][data-category="{category}"]')
    page.wait_for_selector('[data-action="rp-login"]')


def sign_in_at_rp(person: Person, idp: RunningIdP, axe: Axe, category: str, *, consent: str = "allow",
                  screenshots: bool = True) -> dict[str, Any]:
    """From the RP's home page to its result page; returns what the RP shows it received."""
    page = person.page
    open_rp(person, idp, category)
    if screenshots:
        axe.check(page, f"rp-home-{category}")
    page.click('[data-action="rp-login"]')
    page.wait_for_load_state()
    if "/login?" in page.url:
        code = page.text_content('[data-role="confirmation-code"]') or ""
        assert re.fullmatch(r"\d{4}", code.strip())
        assert page.locator('img[data-action="qr"]').get_attribute("src").startswith("/login/qr?txn=")
        if screenshots:
            axe.check(page, "login")
            shot(page, "login")
        page.click('[data-action="passkey"]')
        page.wait_for_url(re.compile(r"/consent\?|/callback\?"))
    if "/consent?" in page.url:
        if screenshots:
            axe.check(page, f"consent-{category}")
            shot(page, f"consent-{category}")
        page.click(f'button[name="decision"][value="{consent}"]')
    page.wait_for_selector('[data-role="sub"], [data-role="rp-error"]')
    if screenshots:
        axe.check(page, f"rp-result-{category}")
        shot(page, f"rp-{category}")
    if consent != "allow":
        return {}
    return {"sub": page.text_content('[data-role="sub"]'),
            "id_token": json.loads(page.text_content('[data-role="id-token"]') or "{}"),
            "userinfo": json.loads(page.text_content('[data-role="userinfo"]') or "{}")}


def test_enrol_and_sign_in_at_every_demo_rp(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    person = new_person("ja-JP")
    page = person.page
    page.goto(f"{browser_idp.base_url}/demo/")
    assert page.get_attribute("html", "lang") == "ja"
    axe.check(page, "demo")
    shot(page, "demo")
    enrol(person, browser_idp, axe, "taro", screenshots=True)
    seen = {category: sign_in_at_rp(person, browser_idp, axe, category) for category in CATEGORIES}

    assert seen["municipal"]["userinfo"]["name"] == "前橋　太郎"
    assert seen["municipal"]["userinfo"]["address"]["formatted"].startswith("群馬県前橋市")
    assert "address" not in seen["medical"]["userinfo"]
    assert seen["financial"]["userinfo"]["verified_claims"]["verification"]["trust_framework"] == "jp_aml"
    assert set(seen["transport"]["userinfo"]) == {"sub", "age_over_18", "age_over_65"}
    assert {v["id_token"]["iss"] for v in seen.values()} == {browser_idp.settings.issuer}
    assert all({"hwk", "user"} <= set(v["id_token"]["amr"]) for v in seen.values())
    subs = {c: v["sub"] for c, v in seen.items()}
    assert subs["municipal"] == subs["medical"] != subs["financial"] == subs["transport"]

    page.goto(f"{browser_idp.base_url}/demo/")
    table = page.locator('[data-role="side-by-side"]')
    assert all(sub in (table.text_content() or "") for sub in subs.values())
    axe.check(page, "demo-side-by-side")
    shot(page, "demo-side-by-side")
    assert not [e for e in person.console_errors if "favicon" not in e], person.console_errors


def test_cross_device_qr_login_and_language_switch(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    phone = new_person("ja-JP")
    enrol(phone, browser_idp, axe, "sho")
    computer = new_person("en-US", authenticator=False)  # no passkey here: the phone signs
    open_rp(computer, browser_idp, "medical")
    computer.page.click('[data-action="rp-login"]')
    computer.page.wait_for_url(re.compile(r"/login\?"))
    page = computer.page
    assert page.get_attribute("html", "lang") == "en"
    code = (page.text_content('[data-role="confirmation-code"]') or "").strip()
    wallet_url = page.get_attribute('img[data-action="qr"]', "data-url")
    assert wallet_url and wallet_url.startswith(f"{browser_idp.base_url}/login/wallet?txn=")
    assert page.get_attribute('a[data-role="wallet-link"]', "href") == wallet_url
    axe.check(page, "login-qr")
    shot(page, "qr")

    phone.page.goto(wallet_url)  # what scanning the QR code opens on the phone
    assert (phone.page.text_content('[data-role="confirmation-code"]') or "").strip() == code
    axe.check(phone.page, "wallet-approve")
    shot(phone.page, "wallet-approve")
    phone.page.click('[data-action="approve"]')
    # Selectors, not a string predicate: the page's CSP (script-src 'self') refuses eval.
    phone.page.wait_for_selector("#approve-actions", state="hidden")
    assert (phone.page.text_content("#approve-status") or "").strip()

    page.wait_for_url(re.compile(r"/consent\?"))  # the computer continues by itself
    axe.check(page, "consent-en")
    shot(page, "consent-en")
    page.click('a[data-lang="ja"]')
    page.wait_for_load_state()
    assert page.get_attribute("html", "lang") == "ja" and "提供される情報" in (page.text_content("main") or "")
    axe.check(page, "consent-ja")
    shot(page, "consent-ja")
    page.click('button[name="decision"][value="allow"]')
    page.wait_for_selector('[data-role="sub"]')
    # Only the browser that opened the sign-in got the session; the phone's browser did not.
    phone.page.goto(f"{browser_idp.base_url}/account")
    assert phone.page.locator('[data-role="devices"]').count() == 0


def test_revoked_device_cannot_sign_in_again(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    person = new_person("en-US")
    serial = enrol(person, browser_idp, axe, "hanako")
    sign_in_at_rp(person, browser_idp, axe, "municipal", screenshots=False)
    page = person.page
    page.goto(f"{browser_idp.base_url}/account")  # the IdP session from the RP login
    row = page.locator(f'[data-serial="{serial}"]')
    assert row.get_attribute("data-state") == "active"
    assert page.locator("article.service").count() >= 1
    axe.check(page, "account")
    shot(page, "account")

    row.locator('[data-action="revoke"]').click()
    page.wait_for_selector('[data-action="confirm-revoke"]')
    axe.check(page, "account-revoke")
    shot(page, "account-revoke")
    page.check("#reason-lost")
    page.click('[data-action="confirm-revoke"]')
    page.wait_for_selector('[data-role="notice"]')
    assert "signed out" in (page.text_content('[data-role="notice"]') or "")
    axe.check(page, "account-signin")
    shot(page, "account-signed-out")

    open_rp(person, browser_idp, "municipal")
    page.click('[data-action="rp-login"]')
    page.wait_for_url(re.compile(r"/login\?"))  # the session ended with the device
    page.click('[data-action="passkey"]')
    outcome = page.locator("#outcome")
    outcome.wait_for(state="visible")
    assert "revoked" in (outcome.text_content() or "")
    assert page.locator('[data-action="retry"]').is_visible()
    axe.check(page, "login-refused")
    shot(page, "login-refused")
    # The account page's own sign-in refuses the revoked device too.
    page.goto(f"{browser_idp.base_url}/account")
    page.click('[data-action="passkey"]')
    page.locator("#outcome").wait_for(state="visible")
    assert "revoked" in (page.text_content("#outcome") or "")


def test_account_sign_in_withdraw_and_download(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    person = new_person("en-US")
    enrol(person, browser_idp, axe, "sho")
    sign_in_at_rp(person, browser_idp, axe, "transport", screenshots=False)
    page = person.page
    page.context.clear_cookies()  # a new visit: sign in on the account page itself
    page.goto(f"{browser_idp.base_url}/account")
    axe.check(page, "account-sign-in")
    page.click('[data-action="passkey"]')
    page.wait_for_selector('[data-role="devices"]')
    service = page.locator("article.service").first
    assert "Aged 18 or over" in (service.text_content() or "")
    service.locator('[data-action="withdraw"]').click()
    page.wait_for_selector('[data-action="confirm-withdraw"]')
    axe.check(page, "account-withdraw")
    shot(page, "account-withdraw")
    page.click('[data-action="confirm-withdraw"]')
    page.wait_for_selector('[data-role="notice"]')
    assert "withdrawn" in (page.text_content("article.service") or "")
    with page.expect_download() as download:
        page.click('[data-action="export"]')
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert data["verified_attributes"]["name"] == "桐生　翔"
    assert data["services"][0]["withdrawn_at"] is not None


def test_more_time_and_retry_after_expiry(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    person = new_person("en-US")
    enrol(person, browser_idp, axe, "taro")
    page = person.page
    open_rp(person, browser_idp, "medical")
    page.click('[data-action="rp-login"]')
    page.wait_for_url(re.compile(r"/login\?"))
    txn_id = page.url.split("txn=")[1].split("&")[0]
    first_code = page.text_content('[data-role="confirmation-code"]')

    def set_expiry(delta: timedelta) -> None:
        with browser_idp.services().db.transaction() as session:
            session.get(AuthorizationTransaction, txn_id).expires_at = utcnow() + delta

    set_expiry(timedelta(seconds=90))
    page.reload()
    page.locator("#timer").wait_for(state="visible")
    axe.check(page, "login-timer")
    page.click('[data-action="extend"]')
    page.locator("#timer").wait_for(state="hidden")
    with browser_idp.services().db.sessions() as session:
        assert session.get(AuthorizationTransaction, txn_id).expires_at > utcnow() + timedelta(minutes=9)

    set_expiry(timedelta(seconds=-1))
    page.locator("#outcome").wait_for(state="visible", timeout=10_000)  # the poll sees the expiry
    assert "expired" in (page.text_content("#outcome") or "")
    axe.check(page, "login-expired")
    shot(page, "login-expired")
    page.click('[data-action="retry"]')
    page.wait_for_url(re.compile(r"/login\?"))
    assert txn_id not in page.url and page.locator('[data-action="passkey"]').is_visible()
    assert page.text_content('[data-role="confirmation-code"]') is not None
    page.click('[data-action="passkey"]')  # the fresh sign-in completes the same RP request
    page.wait_for_url(re.compile(r"/consent\?|/callback\?"))
    del first_code


def test_keyboard_focus_and_error_pages(browser_idp: RunningIdP, new_person: Any, axe: Axe) -> None:
    person = new_person("ja-JP", authenticator=False)
    page = person.page
    page.goto(f"{browser_idp.base_url}/login?txn=unknown")
    assert page.get_attribute("html", "lang") == "ja"
    axe.check(page, "error-ja")
    shot(page, "error-ja")
    page.goto(f"{browser_idp.base_url}/")
    axe.check(page, "home")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")  # focus is visible
    page.click('a[data-lang="en"]')
    assert page.get_attribute("html", "lang") == "en"
    page.goto(f"{browser_idp.base_url}/account")
    assert page.get_attribute("html", "lang") == "en"  # the switch is remembered


def test_accessibility_checker_is_available(axe: Axe) -> None:
    if not axe.available:
        pytest.skip("axe-core is not installed in tests/browser/node_modules (run `make browser-deps`): "
                    "the browser tests ran without accessibility checks")
