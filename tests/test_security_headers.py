"""The response-header policy (idp/web/headers.py) on every HTML page a person can reach,
and pages that satisfy it: no inline script or style for the CSP to allow."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import browser_login
from tests.test_account import sign_in

HTML = {"Accept": "text/html", "Accept-Language": "en"}
INLINE = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>|<style\b|\sstyle=|\son[a-z]+=",
                    re.IGNORECASE)


def _recording(session: requests.Session) -> list[requests.Response]:
    seen: list[requests.Response] = []
    session.hooks["response"].append(lambda response, *args, **kwargs: seen.append(response))
    session.headers.update(HTML)
    return seen


def test_every_page_refuses_framing_sniffing_caching_and_inline_code(idp: RunningIdP) -> None:
    base = idp.base_url
    browser = requests.Session()
    seen = _recording(browser)
    wallet = idp.wallet()
    device = core.enrol(idp, wallet=wallet)
    rp = core.register(idp)
    location = rp.start(browser)
    txn = core.txn_of(location)
    browser.get(f"{base}/login/wallet?txn={txn}")
    browser_login(browser, base, location, wallet, device)
    assert sign_in(idp, browser, device).status_code == 200
    for path in ("/", "/account", f"/account/devices/{device.serial}/revoke",
                 f"/account/consents/{rp.client_id}/withdraw", "/logout", "/demo/",
                 "/authorize?client_id=unknown", "/login?txn=unknown", "/no-such-page"):
        browser.get(base + path)
    pages = [r for r in seen if r.headers.get("Content-Type", "").startswith("text/html")]
    paths = {urlsplit(r.url).path for r in pages}
    assert {"/", "/login", "/login/wallet", "/consent", "/account", "/logout", "/authorize"} <= paths, paths
    for response in pages:
        where = f"{response.request.method} {response.url}"
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, where
        assert "style-src 'self'" in policy and "'unsafe-inline'" not in policy, where
        assert response.headers.get("X-Frame-Options") == "DENY", where
        assert response.headers.get("X-Content-Type-Options") == "nosniff", where
        assert response.headers.get("Referrer-Policy") == "no-referrer", where
        assert response.headers.get("Cache-Control") == "no-store", where
        assert "Strict-Transport-Security" not in response.headers, "HSTS only with an https issuer"
        assert not INLINE.search(response.text), f"inline code on {where}: {INLINE.search(response.text)}"


def test_json_answers_are_not_sniffed_or_framed(idp: RunningIdP) -> None:
    response = requests.get(idp.base_url + "/.well-known/openid-configuration", timeout=10)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
