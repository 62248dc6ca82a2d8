"""Native apps get pairwise sectors of their own (PROTOCOL §7.2, OIDC Core §8.1, RFC 8252).

A loopback or private-use-scheme redirect URI identifies no operator: three unrelated
native apps on ``http://127.0.0.1:<port>`` must not share a ``sub``. A native app that
registers a ``sector_identifier_uri`` shares the sector that URI's host names.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from idp.pairwise import identifies_no_operator, sector_identifier
from tests.support.rp import RelyingParty, browser_login


def _native(idp, redirect_uri: str, **metadata) -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=redirect_uri, rp_category="municipal",
                                 application_type="native", token_endpoint_auth_method="none", **metadata)


def _sub(idp, rp: RelyingParty, wallet, device) -> str:
    browser = requests.Session()
    return rp.finish(browser_login(browser, idp.base_url, rp.start(browser), wallet.with_session(browser),
                                   device)).sub


def test_three_native_apps_on_loopback_get_three_unrelated_subs(idp, person, host) -> None:
    wallet, device = person
    apps = [_native(idp, f"http://127.0.0.1:{port}/cb") for port in (50001, 50002, 50002)]
    subs = [_sub(idp, app, wallet, device) for app in apps]
    assert len(set(subs)) == 3, subs
    # Two native apps of one operator name its sector (OIDC Core §8.1): they share the sub.
    uris = [f"http://127.0.0.1:{50100 + i}/cb/{secrets.token_hex(3)}" for i in range(2)]
    sector = host.put(f"/sector-{secrets.token_hex(4)}.json", uris)
    shared = [_native(idp, uri, sector_identifier_uri=sector) for uri in uris]
    shared_subs = {_sub(idp, app, wallet, device) for app in shared}
    assert len(shared_subs) == 1 and not shared_subs & set(subs)


def test_private_use_scheme_app_registers_with_a_sector_of_its_own(idp) -> None:
    one = RelyingParty.register(idp.base_url, redirect_uri="jp.example.wallet:/cb", rp_category="municipal",
                                application_type="native", token_endpoint_auth_method="none")
    assert one.client["client_id"]


@pytest.mark.parametrize("uri, expected", [
    ("http://127.0.0.1:8080/cb", True), ("http://[::1]/cb", True), ("http://localhost/cb", True),
    ("com.example.app:/cb", True), ("https://app.example.jp/cb", False), ("http://rp.example/cb", False)])
def test_which_redirect_uris_identify_no_operator(uri: str, expected: bool) -> None:
    assert identifies_no_operator(uri) is expected


def test_native_app_with_an_https_redirect_keeps_its_host_sector() -> None:
    assert sector_identifier(redirect_uris=["https://app.example.jp/cb"], sector_identifier_uri=None,
                             application_type="native", client_id="c1") == "app.example.jp"
    assert sector_identifier(redirect_uris=["http://127.0.0.1:9/cb"], sector_identifier_uri=None,
                             application_type="native", client_id="c1") == "native:c1"
    assert sector_identifier(redirect_uris=["http://127.0.0.1:9/cb"], sector_identifier_uri=None,
                             application_type="web", client_id="c1") == "127.0.0.1"
