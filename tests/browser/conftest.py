"""Real-browser tests: Playwright (the PyPI package) driving Debian's Chromium with the
Chrome DevTools WebAuthn virtual authenticator, against a live IdP on loopback.

No browser is ever downloaded: the tests use ``/usr/bin/chromium`` (``IDP_TEST_CHROMIUM``
may name another binary) and are skipped, with the reason, when it or Playwright is
missing. Accessibility is checked with axe-core from ``tests/browser/node_modules``
(``make browser-deps``); without it the check is skipped by a visible test of its own.
Screenshots and axe reports go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningIdP, start_idp

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parent / "artifacts"
AXE_JS = HERE / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("IDP_TEST_CHROMIUM") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
BLOCKING = ("serious", "critical")
TIMEOUT_MS = 20_000
# The two screens every person page is checked at: a phone held upright (390×844 CSS px,
# touch, mobile viewport meta honoured) and a laptop (1280×800).
SCREENS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 1},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}


def _chromium_or_skip() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[test]')")
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium); "
                    "browser tests never download a browser")
    return path


def start_localhost_idp(tmp: Path, jpki_ca: Any) -> Iterator[RunningIdP]:
    """An IdP whose issuer is ``http://localhost:PORT``: a WebAuthn RP ID must be a domain,
    never an IP address, so a real browser refuses ``127.0.0.1``."""
    yield from start_idp(tmp, jpki_ca, host="localhost")


@pytest.fixture(scope="module")
def browser_idp(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any) -> Iterator[RunningIdP]:
    """A fresh IdP for this module at http://localhost:PORT (development mode: the demo is on)."""
    _chromium_or_skip()
    yield from start_localhost_idp(tmp_path_factory.mktemp("browser-idp"), jpki_ca)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Person:
    """One browser profile (context) with one page and, optionally, a virtual authenticator."""

    context: Any
    page: Any
    cdp: Any = None
    authenticator_id: str | None = None
    console_errors: list[str] = field(default_factory=list)

    def add_authenticator(self) -> str:
        """A platform authenticator with user verification: the phone's secure area."""
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable")
        answer = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}})
        self.authenticator_id = answer["authenticatorId"]
        return self.authenticator_id

    def credentials(self) -> list[dict[str, Any]]:
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})["credentials"]

    def import_credential(self, credential: dict[str, Any]) -> None:
        """Put another authenticator's credential into this one (the same phone key on another screen)."""
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.authenticator_id,
                                                 "credential": credential})


@pytest.fixture
def new_person(chromium: Any) -> Iterator[Any]:
    """Factory: ``new_person(locale="ja-JP", authenticator=True, screen="desktop"|"phone")`` → :class:`Person`."""
    opened: list[Any] = []

    def make(locale: str = "ja-JP", authenticator: bool = True, screen: str = "desktop") -> Person:
        context = chromium.new_context(locale=locale, accept_downloads=True, **SCREENS[screen])
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        page = context.new_page()
        person = Person(context, page)
        page.on("console", lambda m: person.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: person.console_errors.append(f"page error: {e}"))
        if authenticator:
            person.add_authenticator()
        return person

    yield make
    for context in opened:
        context.close()


class Axe:
    """axe-core in the page: every serious or critical violation fails the test."""

    def __init__(self) -> None:
        self.available = AXE_JS.exists()
        self.checked: list[str] = []

    def check(self, page: Any, name: str) -> list[dict[str, Any]]:
        if not self.available:
            return []
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))  # not a <script> tag: the pages' CSP refuses inline code
        result = page.evaluate("""async (tags) => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                          nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }""", AXE_TAGS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps({"url": page.url, "violations": result}, indent=2))
        self.checked.append(name)
        blocking = [v for v in result if v["impact"] in BLOCKING]
        assert not blocking, f"axe-core on {name} ({page.url}): {json.dumps(blocking, indent=1)}"
        return result


@pytest.fixture
def axe() -> Axe:
    return Axe()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def first_screen(page: Any, selector: str) -> None:
    """The element is wholly inside the first screen (no scrolling needed to see or press it)."""
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not displayed on {page.url}"
    viewport = page.viewport_size
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 0.5, (selector, box, viewport)
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"] + 0.5, (selector, box, viewport)


def no_horizontal_scroll(page: Any) -> None:
    """Nothing on the page is wider than the screen (WCAG 1.4.10 Reflow)."""
    screen = page.viewport_size["width"]  # a mobile browser widens its layout viewport to the content
    widths = page.evaluate("""(SCREEN) => ({page: document.documentElement.scrollWidth, body: document.body.scrollWidth,
        screen: SCREEN,
        wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > SCREEN + 1
              && getComputedStyle(e).position !== 'absolute').slice(0, 5).map(e => e.tagName + '.' + e.className)})""", screen)
    assert widths["page"] <= widths["screen"] and widths["body"] <= widths["screen"], f"{page.url} scrolls sideways: {widths}"


# Words a person should never have to read on a Japanese page (protocol and PKI jargon). "パスキー"
# may appear once, where it is explained in plain words (the login page).
FORBIDDEN_JA = ("失効", "識別子", "UserInfo", "JSON", "IDトークン", "ID トークン", "トークン", "OpenID", "OIDC",
                "WebAuthn", "認証器", "クレーム", "スコープ", "トランザクション", "リダイレクト", "シリアル",
                "CSRF", "nonce", "PKCE", "acr", "amr", "sub", "client_id", "RP", "エンドポイント", "ペアワイズ")
HEX_SERIAL = re.compile(r"\b[0-9a-f]{12,}\b")


def plain_japanese(page: Any) -> None:
    """The visible text of a Japanese person page has none of :data:`FORBIDDEN_JA` and no hex serials."""
    text = page.inner_text("body")
    found = [word for word in FORBIDDEN_JA if re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text)]
    if text.count("パスキー") > 1:
        found.append("パスキー (more than once)")
    found += HEX_SERIAL.findall(text)
    assert not found, f"jargon on {page.url}: {found}"


def readable_sizes(page: Any) -> None:
    """Body text at least 16 CSS px; buttons (and links styled as buttons) at least 44 px high
    (WCAG 2.5.8 asks 24; 44 is the platforms' guidance for the main actions)."""
    small = page.evaluate("""() => {
        const seen = (e) => e.offsetParent !== null && e.textContent.trim();
        const text = [...document.querySelectorAll('main p, main li, main dd, main dt, main label, main td, main th')]
            .filter(seen).filter(e => parseFloat(getComputedStyle(e).fontSize) < 16)
            .map(e => e.tagName + ' ' + getComputedStyle(e).fontSize + ' ' + e.textContent.trim().slice(0, 30));
        const buttons = [...document.querySelectorAll('main button, main .button')].filter(seen)
            .filter(e => e.getBoundingClientRect().height < 44)
            .map(e => 'button ' + e.getBoundingClientRect().height + ' ' + e.textContent.trim().slice(0, 30));
        return text.concat(buttons).slice(0, 8);
    }""")
    assert not small, f"too small on {page.url}: {small}"


def help_linked(page: Any) -> None:
    assert page.locator('header a[href="/help"]').is_visible(), f"no help link in the header of {page.url}"


def inspect(page: Any, axe: Axe, name: str, problems: list[str], *, main_action: str | None = None) -> None:
    """Every person page at every screen: two screenshots (the first screen as the person sees
    it, and the whole page), then axe, no sideways scrolling and the main action on the first
    screen. A failed check is added to ``problems`` so one run reports every page at once."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    shot(page, f"{name}-full")
    checks = [lambda: no_horizontal_scroll(page), lambda: axe.check(page, name)]
    if page.get_attribute("html", "lang") == "ja" and "/demo/" not in page.url:
        checks.append(lambda: plain_japanese(page))
    if "/demo/rp/" not in page.url:
        checks += [lambda: help_linked(page), lambda: readable_sizes(page)]
    if main_action:
        checks.append(lambda: first_screen(page, main_action))
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")
