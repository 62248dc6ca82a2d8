"""Tokens end with what they came from (PROTOCOL §7.6, RFC 9700 §4.14.2, RFC 7523 §3).

Device revocation (operator or account page), consent withdrawal and client deletion end
the refresh and access tokens descending from them; a refresh token used twice revokes
its whole family; a client assertion's ``jti`` is remembered until the assertion's ``exp``.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from sqlalchemy import select

from idp.storage.models import SeenOnce
from tests.support.lifecycle import card, db, run_cli
from tests.support.rp import RelyingParty, RPError, browser_login

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _offline_rp(idp, **metadata) -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{secrets.token_hex(4)}",
                                 rp_category="municipal", grant_types=["authorization_code", "refresh_token"],
                                 **metadata)


def _tokens(idp, rp: RelyingParty, device):
    browser = requests.Session()
    location = rp.start(browser, scope="openid profile offline_access", prompt="consent")
    return rp.finish(browser_login(browser, idp.base_url, location, idp.wallet(browser), device))


def _refused_refresh(rp: RelyingParty, refresh_token: str) -> None:
    with pytest.raises(RPError) as refused:
        rp.refresh(refresh_token)
    assert refused.value.status == 400 and refused.value.error == "invalid_grant", refused.value.body


def test_device_revocation_ends_its_refresh_and_access_tokens(idp, monkeypatch) -> None:
    person = card(idp)
    lost, kept = idp.wallet().enroll(person), idp.wallet().enroll(person)
    rp = _offline_rp(idp)
    lost_tokens, kept_tokens = _tokens(idp, rp, lost), _tokens(idp, rp, kept)
    rotated = rp.refresh(lost_tokens.refresh_token)  # descendants too, not only the first token
    assert rp.introspect(rotated.access_token)["active"] is True

    assert run_cli(idp, monkeypatch, "ca", "revoke", lost.serial, "--reason", "keyCompromise").code == 0

    _refused_refresh(rp, rotated.refresh_token)
    assert rp.introspect(rotated.access_token) == {"active": False}
    assert requests.get(rp.provider["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {rotated.access_token}"}).status_code == 401
    # the other phone's tokens live on
    assert rp.introspect(kept_tokens.access_token)["active"] is True
    assert rp.refresh(kept_tokens.refresh_token).access_token


def test_suspension_of_a_suspected_clone_ends_its_tokens(idp, monkeypatch) -> None:
    device = idp.wallet().enroll(card(idp))
    rp = _offline_rp(idp)
    tokens = _tokens(idp, rp, device)
    assert run_cli(idp, monkeypatch, "ca", "revoke", device.serial, "--reason", "certificateHold").code == 0
    _refused_refresh(rp, tokens.refresh_token)
    assert rp.introspect(tokens.access_token) == {"active": False}


def test_refresh_token_reuse_revokes_the_whole_family(idp) -> None:
    device = idp.wallet().enroll(card(idp))
    rp = _offline_rp(idp)
    first = _tokens(idp, rp, device)
    other_login = _tokens(idp, rp, device)  # another family of the same person and client
    second = rp.refresh(first.refresh_token)
    third = rp.refresh(second.refresh_token)

    _refused_refresh(rp, first.refresh_token)  # a thief (or a confused client) replays an old one

    _refused_refresh(rp, third.refresh_token)
    for token in (first, second, third):
        assert rp.introspect(token.access_token) == {"active": False}
    assert rp.introspect(other_login.access_token)["active"] is True
    assert rp.refresh(other_login.refresh_token).access_token


def test_consent_withdrawal_ends_the_tokens(idp) -> None:
    device = idp.wallet().enroll(card(idp))
    rp = _offline_rp(idp)
    tokens = _tokens(idp, rp, device)
    from idp.consent import withdraw_consent
    from idp.storage.models import Token

    with db(idp) as session:
        account_id = session.scalars(select(Token.account_id).where(Token.client_id == rp.client_id)).first()
        assert withdraw_consent(session, account_id, rp.client_id)
    _refused_refresh(rp, tokens.refresh_token)
    assert rp.introspect(tokens.access_token) == {"active": False}


def test_client_assertion_replayed_after_600_s_but_before_exp_is_refused(idp) -> None:
    """RFC 7523 §3 item 7: the jti is remembered as long as the assertion is valid (here an
    hour), not a fixed 600 s. The used-set is aged by 700 s instead of waiting."""
    rp = RelyingParty.register(idp.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{secrets.token_hex(4)}",
                               rp_category="municipal", token_endpoint_auth_method="private_key_jwt")
    url, *_ = rp.authorization_url(par=False)
    params = dict(parse_qsl(urlsplit(url).query))
    params.update(client_assertion_type=ASSERTION_TYPE,
                  client_assertion=rp.client_assertion(exp=int(time.time()) + 3600))
    endpoint = rp.provider["pushed_authorization_request_endpoint"]
    assert requests.post(endpoint, data=params, timeout=10).status_code == 201
    with db(idp) as session:
        for row in session.scalars(select(SeenOnce).where(SeenOnce.key.like("jti:%"))):
            row.expires_at -= timedelta(seconds=700)
    replay = requests.post(endpoint, data=params, timeout=10)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client", replay.text
