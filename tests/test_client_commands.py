"""``idp clients add / list / show / disable``: run as an operator would, against
a live server; disabling ends the client's tokens at once."""

from __future__ import annotations

import json
import secrets

import requests

from tests.conftest import RunningIdP
from tests.support.lifecycle import run_cli
from tests.support.rp import RelyingParty, browser_login


def _rp_from_cli(idp: RunningIdP, info: dict, redirect_uri: str) -> RelyingParty:
    session = requests.Session()
    provider = session.get(idp.base_url + "/.well-known/openid-configuration", timeout=10).json()
    return RelyingParty(provider, info, redirect_uri=redirect_uri, session=session, scope="openid profile")


def test_add_list_show(idp: RunningIdP, monkeypatch) -> None:
    redirect = f"http://127.0.0.1:9/cb/{secrets.token_hex(3)}"
    added = run_cli(idp, monkeypatch, "clients", "add", "--category", "medical", "--name", "Clinic\tA",
                    "--redirect-uri", redirect)
    assert added.code == 0, added
    info = json.loads(added.out)
    assert info["rp_category"] == "medical" and info["client_secret"] and info["redirect_uris"] == [redirect]
    listed = run_cli(idp, monkeypatch, "clients", "list")
    line = next(row for row in listed.out.splitlines() if row.startswith(info["client_id"]))
    assert line.split("\t")[1:3] == ["medical", "active"]
    shown = json.loads(run_cli(idp, monkeypatch, "clients", "show", info["client_id"]).out)
    assert shown["status"] == "active" and "client_secret" not in shown
    missing = run_cli(idp, monkeypatch, "clients", "show", "no-such-client")
    assert missing.code == 1 and "no client" in missing.err
    bad = run_cli(idp, monkeypatch, "clients", "add", "--category", "financial", "--name", "Bank",
                  "--redirect-uri", redirect)
    assert bad.code == 1 and "invalid_client_metadata" in bad.err and "private_key_jwt" in bad.err


def test_disabled_client_tokens_stop_working_at_once(idp: RunningIdP, monkeypatch, person) -> None:
    wallet, device = person
    redirect = f"http://127.0.0.1:9/cb/{secrets.token_hex(3)}"
    info = json.loads(run_cli(idp, monkeypatch, "clients", "add", "--category", "municipal", "--name", "City",
                              "--redirect-uri", redirect, "--refresh-tokens").out)
    rp = _rp_from_cli(idp, info, redirect)
    browser = requests.Session()
    location = rp.start(browser, scope="openid profile offline_access", prompt="consent")
    result = rp.finish(browser_login(browser, idp.base_url, location, wallet.with_session(browser), device))
    assert rp.userinfo(result.access_token)["sub"] == result.sub
    assert rp.introspect(result.access_token)["active"] is True

    disabled = run_cli(idp, monkeypatch, "clients", "disable", rp.client_id)
    assert disabled.code == 0 and "tokens revoked" in disabled.out, disabled

    userinfo = requests.get(rp.provider["userinfo_endpoint"],
                            headers={"Authorization": f"Bearer {result.access_token}"}, timeout=10)
    assert userinfo.status_code == 401
    refresh = rp.token_request({"grant_type": "refresh_token", "refresh_token": result.refresh_token or ""})
    assert refresh.status_code == 401 and refresh.json()["error"] == "invalid_client"
    introspection = requests.post(rp.provider["introspection_endpoint"], data={"token": result.access_token},
                                  auth=(rp.client_id, info["client_secret"]), timeout=10)
    assert introspection.status_code == 401
    page = requests.get(rp.authorization_url()[0], allow_redirects=False, timeout=10)
    assert page.status_code == 400 and "Location" not in page.headers
    shown = json.loads(run_cli(idp, monkeypatch, "clients", "show", rp.client_id).out)
    assert shown["status"] == "disabled"
