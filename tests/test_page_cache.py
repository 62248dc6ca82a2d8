"""The login page drawn once per process and filled per request (idp.web.page_cache).

Every page served through the cache is compared, byte for byte, with a fresh Jinja render of
the same template and values made in the same request: several transactions, both languages,
a client whose name and purpose carry HTML's special characters, other claims and purposes,
extra query parameters in the language links, failed and expired sign-ins, parallel first
requests. A client's changed name and category show at once; the cache stays bounded; a
template that lets a per-request value shape the markup fails loudly.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import render_template
from markupsafe import escape
from sqlalchemy import update

from idp.storage.models import AuthorizationTransaction, Client, utcnow
from idp.web import page_cache
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import RelyingParty

SPECIAL_NAME = 'A&B <b>"Shop"</b> \'1\''
# The login page's inputs and values for a page drawn outside a sign-in.
PAGE_INPUTS = {"service": "S", "category": "municipal", "claims": ("name",), "purpose": "p", "txn_state": "failed",
               "failure_message": None}
PAGE_VALUES = {"txn_id": "x", "confirmation_code": "0000", "expires_in": 1, "wallet_url": "w", "qr": "q",
               "continue_url": "c", "retry_token": "r", "cancel_token": "t"}


class CheckingCache(page_cache.PageCache):
    """The app's cache, which also renders each page afresh in the same request."""

    def __init__(self, size: int = page_cache.MAX_SHAPES) -> None:
        super().__init__(size)
        self.pages: list[tuple[str, str]] = []  # (served, fresh)
        self.draws = 0
        self.lock = threading.Lock()

    def render(self, template: str, inputs: Any, values: Any) -> str:
        served = super().render(template, inputs, values)
        fresh = render_template(template, **inputs, **values)
        with self.lock:
            self.pages.append((served, fresh))
        return served


@pytest.fixture
def cache(idp: RunningIdP, monkeypatch: pytest.MonkeyPatch) -> Iterator[CheckingCache]:
    checking = CheckingCache()
    real_draw = page_cache._draw

    def counted(*args: Any) -> Any:
        with checking.lock:
            checking.draws += 1
        return real_draw(*args)

    monkeypatch.setattr(page_cache, "_draw", counted)
    monkeypatch.setitem(idp.app.extensions, page_cache.EXTENSION, checking)
    yield checking
    for served, fresh in checking.pages:
        assert served == fresh


@pytest.fixture(scope="module")
def shop(idp: RunningIdP) -> RelyingParty:
    return core.register(idp, "transport", client_name=SPECIAL_NAME, **{"client_name#en": "Shop <en> & Co"},
                         purpose="Fares & <refunds>")


def login_page(idp: RunningIdP, rp: RelyingParty, browser: requests.Session, *, query: str = "",
               **extra: Any) -> tuple[str, str]:
    txn = core.start_login(rp, browser, **extra)
    response = browser.get(f"{idp.base_url}/login?txn={txn}{query}", timeout=10)
    assert response.status_code == 200
    return txn, response.text


def test_cached_pages_equal_fresh_renders_for_each_transaction_and_language(
        idp: RunningIdP, shop: RelyingParty, cache: CheckingCache) -> None:
    pages = {}
    for language in ("ja", "en", "ja", "en", "en"):
        with requests.Session() as browser:
            txn, html = login_page(idp, shop, browser, ui_locales=language)
        pages[txn] = html
        assert f'<html lang="{language}">' in html
        assert html.count(f'value="{txn}"') == 2 and f'data-txn="{txn}"' in html
        assert f'href="/login?txn={txn}&amp;lang=' in html  # the language link carries this transaction
        found = re.search(r'id="login-options">([^<]*)</script>', html)
        assert found and len(json.loads(found.group(1))["challenge"]) >= 43
    assert len(cache.pages) == 5 and cache.draws == 2  # one drawing per language
    texts = list(pages.values())
    assert "Shop &lt;en&gt; &amp; Co" in texts[1] and "<en>" not in texts[1]
    assert str(escape(SPECIAL_NAME)) in texts[0] and SPECIAL_NAME not in texts[0]
    assert "Fares &amp; &lt;refunds&gt;" in texts[0]
    challenges = {re.search(r'"challenge": "([^"]+)"', t).group(1) for t in texts}  # type: ignore[union-attr]
    assert len(challenges) == 5


def test_claims_and_purpose_each_have_their_own_page(idp: RunningIdP, shop: RelyingParty,
                                                     cache: CheckingCache, browser: requests.Session) -> None:
    def lead_and_purpose(html: str) -> tuple[str, str]:
        lead = re.search(r'<p class="lead">(.*?)</p>', html)
        purpose = re.search(r'Purpose of use: ([^<]*)</p>', html)
        assert lead and purpose
        return lead.group(1), purpose.group(1)

    everything = lead_and_purpose(login_page(idp, shop, browser, query="&lang=en")[1])
    nothing = lead_and_purpose(login_page(idp, shop, browser, query="&lang=en", scope="openid")[1])
    other = lead_and_purpose(login_page(idp, shop, browser, query="&lang=en", purpose="Season <tickets>")[1])
    assert "Aged 18 or over" in everything[0] and everything[1] == "Fares &amp; &lt;refunds&gt;"
    assert "asks only that you sign in" in nothing[0] and "Aged" not in nothing[0]
    assert other == (everything[0], "Season &lt;tickets&gt;")
    assert cache.draws == 3


def test_language_links_escape_what_the_url_carries(idp: RunningIdP, shop: RelyingParty,
                                                    cache: CheckingCache, browser: requests.Session) -> None:
    _, html = login_page(idp, shop, browser, query="&x=%22%3E%3Cscript%3E&y=%26")
    assert "<script>" not in html
    assert "x=%22%3E%3Cscript%3E" in html and "&amp;y=%26" in html
    assert len(cache.pages) == 1


def test_failed_and_expired_sign_ins_equal_fresh_renders(idp: RunningIdP, shop: RelyingParty,
                                                         cache: CheckingCache, browser: requests.Session) -> None:
    failed = core.start_login(shop, browser)
    assert requests.post(f"{idp.base_url}/login/mismatch", json={"txn": failed}, timeout=10).ok
    html = browser.get(f"{idp.base_url}/login?txn={failed}", timeout=10).text
    assert 'data-state="failed"' in html and 'id="login-options"' not in html
    expired = core.start_login(shop, browser)
    with idp.services().db.transaction() as session:
        session.execute(update(AuthorizationTransaction).where(AuthorizationTransaction.id == expired)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    html = browser.get(f"{idp.base_url}/login?txn={expired}", timeout=10).text
    assert 'data-state="expired"' in html and 'id="login-options"' not in html
    assert len(cache.pages) == 2 and cache.draws == 2


def test_a_changed_client_shows_at_once(idp: RunningIdP, cache: CheckingCache, browser: requests.Session) -> None:
    rp = core.register(idp, "municipal", client_name="Old Town Hall")
    txn, html = login_page(idp, rp, browser)
    assert "Old Town Hall" in html
    with idp.services().db.transaction() as session:
        row = session.get(Client, rp.client_id)
        session.execute(update(Client).where(Client.client_id == rp.client_id).values(
            client_metadata={**row.client_metadata, "client_name": "New <Town> Hall"}, rp_category="medical"))
    for page in (browser.get(f"{idp.base_url}/login?txn={txn}", timeout=10).text, login_page(idp, rp, browser)[1]):
        assert "Old Town Hall" not in page and "New &lt;Town&gt; Hall" in page
        assert "医療機関" in page  # the new category's label
    assert cache.draws == 2


def test_parallel_first_requests_each_get_their_own_page(idp: RunningIdP, shop: RelyingParty,
                                                         cache: CheckingCache) -> None:
    browsers = [requests.Session() for _ in range(8)]
    try:
        txns = [core.start_login(shop, browser) for browser in browsers]
        with ThreadPoolExecutor(8) as pool:
            pages = list(pool.map(lambda pair: pair[1].get(f"{idp.base_url}/login?txn={pair[0]}", timeout=10).text,
                                  zip(txns, browsers)))
    finally:
        for browser in browsers:
            browser.close()
    for txn, html in zip(txns, pages):
        assert f'data-txn="{txn}"' in html
        assert sum(t in html for t in txns) == 1  # no other transaction's values
    assert len(cache.pages) == 8


def test_the_cache_is_bounded_and_drops_the_least_recently_used(idp: RunningIdP,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cache = page_cache.PageCache(size=2)
    drawn: list[str] = []
    real_draw = page_cache._draw

    def draw(template: str, inputs: Any, names: Any) -> Any:
        drawn.append(inputs["purpose"])
        return real_draw(template, inputs, names)

    monkeypatch.setattr(page_cache, "_draw", draw)

    def page(purpose: str) -> str:
        return cache.render("login.html", {**PAGE_INPUTS, "purpose": purpose}, PAGE_VALUES)

    with idp.app.test_request_context("/login?txn=x"):
        for purpose in ("one", "two", "one", "three", "one", "two"):
            assert f": {purpose}</p>" in page(purpose)
    assert drawn == ["one", "two", "three", "two"]  # "two" was the least recently used when "three" came
    assert len(cache) == 2


def test_a_value_can_only_be_printed() -> None:
    marker = page_cache._Marker("\x00n:v\x00")
    assert str(escape(marker)) == "\x00n:v\x00"
    with pytest.raises(TypeError):
        bool(marker)
    with pytest.raises(TypeError):
        str(marker)


def test_a_template_testing_a_value_fails_when_drawn(idp: RunningIdP) -> None:
    cache = page_cache.PageCache()
    inputs = {**PAGE_INPUTS}
    del inputs["failure_message"]  # an input of the login page: as a value it would decide the markup
    with idp.app.test_request_context("/login?txn=x"), pytest.raises(TypeError):
        cache.render("login.html", inputs, {**PAGE_VALUES, "failure_message": "no"})
