"""The login hot path's economies keep their promises (issue 11): the QR code is its own
cacheable image of the transaction's wallet URL, for the opening browser only."""

from __future__ import annotations

import re

import pytest
import requests

from idp.web.login import qr_svg
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import RelyingParty, browser_login


@pytest.fixture(scope="module")
def rp(idp: RunningIdP) -> RelyingParty:
    return core.register(idp, "municipal")


def test_login_page_points_at_the_qr_image_instead_of_drawing_it(idp: RunningIdP, rp: RelyingParty,  # type: ignore[no-untyped-def]
                                                                  browser) -> None:
    txn = core.start_login(rp, browser)
    page = browser.get(f"{idp.base_url}/login", params={"txn": txn}, timeout=10)
    assert page.status_code == 200
    tag = re.search(r'<img data-action="qr"[^>]*>', page.text)
    assert tag is not None and "data:image" not in tag.group(0)
    src = re.search(r'src="([^"]+)"', tag.group(0)).group(1).replace("&amp;", "&")
    wallet_url = re.search(r'data-url="([^"]+)"', tag.group(0)).group(1).replace("&amp;", "&")
    image = browser.get(f"{idp.base_url}{src}", timeout=10)
    assert image.status_code == 200
    assert image.headers["Content-Type"].startswith("image/svg+xml")
    assert image.headers["Cache-Control"].startswith("private, max-age=")
    assert image.content.startswith(b"<?xml") and b"<svg" in image.content
    # the image is exactly the QR code of the wallet URL the page links to
    assert txn in wallet_url and image.content == qr_svg(wallet_url)


def test_qr_image_is_refused_to_another_browser_and_unknown_transactions(idp: RunningIdP,  # type: ignore[no-untyped-def]
                                                                          rp: RelyingParty, browser) -> None:
    txn = core.start_login(rp, browser)
    with requests.Session() as stranger:
        core.error_of(stranger.get(f"{idp.base_url}/login/qr", params={"txn": txn}, timeout=10), status=403)
    core.error_of(browser.get(f"{idp.base_url}/login/qr", params={"txn": "no-such-txn"}, timeout=10), status=404)
    core.error_of(browser.get(f"{idp.base_url}/login/qr", timeout=10), status=400)


def test_userinfo_takes_access_tokens_only(idp: RunningIdP, browser) -> None:  # type: ignore[no-untyped-def]
    """The one-statement bearer lookup accepts the access token and nothing else (RFC 6750 §1.2)."""
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/hot/cb", rp_category="municipal",
                               scope="openid profile", grant_types=["authorization_code", "refresh_token"])
    wallet = idp.wallet()
    enrolled = wallet.enroll(idp.card())
    location = rp.start(browser, scope="openid profile offline_access", prompt="consent")
    result = rp.finish(browser_login(browser, idp.base_url, location, wallet, enrolled))
    assert result.token.get("refresh_token")
    assert rp.userinfo(result.access_token)["sub"] == result.sub
    for wrong in (result.token["refresh_token"], result.access_token + "x", "x" * 600):
        response = requests.get(rp.provider["userinfo_endpoint"], headers={"Authorization": f"Bearer {wrong}"},
                                timeout=10)
        assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
