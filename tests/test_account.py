"""The account page over real HTTP: device sign-in, devices and revocation, consents and
withdrawal, verified attributes, data export; every change confirmed (POST + CSRF), scoped
to the person's own records, audited, and never done twice.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from sqlalchemy import select

from idp.storage.models import AuditEntry, Consent, DeviceCertificate
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import RelyingParty, RPError
from tests.support.wallet import Enrolled

HTML = {"Accept": "text/html", "Accept-Language": "en"}


def sign_in(idp: RunningIdP, browser: requests.Session, device: Enrolled) -> requests.Response:
    """The /account sign-in ceremony with a device key, as account.js performs it."""
    options = browser.post(f"{idp.base_url}/account/login/options", json={}).json()
    credential = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    return browser.post(f"{idp.base_url}/account/login/assertion",
                        json={"state": options["state"], "credential": credential})


def page(browser: requests.Session, url: str, **kwargs: Any) -> requests.Response:
    return browser.get(url, headers=HTML, **kwargs)


def csrf_from(html: str, action: str) -> str:
    """The csrf_token of the form posting to ``action``."""
    pattern = rf'<form method="post" action="{re.escape(action)}"[^>]*>\s*<input type="hidden" name="csrf_token" value="([0-9a-f]+)"'
    match = re.search(pattern, html)
    assert match, f"no form to {action}"
    return match.group(1)


def audit_events(idp: RunningIdP, event: str) -> list[dict]:
    with core.db(idp) as session:
        return [e.data for e in session.scalars(select(AuditEntry).where(AuditEntry.event == event))]


@pytest.fixture
def person(idp: RunningIdP) -> Enrolled:
    return core.enrol(idp)


@pytest.fixture
def signed_in(idp: RunningIdP, person: Enrolled, browser: requests.Session) -> requests.Session:
    answer = sign_in(idp, browser, person)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "authenticated", "next": "/account"}
    return browser


def test_account_page_asks_to_sign_in_first(idp: RunningIdP, browser: requests.Session) -> None:
    response = page(browser, f"{idp.base_url}/account")
    assert response.status_code == 200
    assert 'data-action="passkey"' in response.text and "Sign in to your account" in response.text
    assert "Your devices" not in response.text


def test_overview_lists_devices_attributes_and_nothing_shared_yet(idp: RunningIdP, person: Enrolled,
                                                                  signed_in: requests.Session) -> None:
    html = page(signed_in, f"{idp.base_url}/account").text
    assert f'data-serial="{person.serial}"' in html and 'data-state="active"' in html
    assert "前橋　太郎" in html and "January 1, 1980" in html and "Male" in html
    assert "You have not shared information with any service yet." in html
    assert "you are using this one now" in html  # the device used for this session is marked


def test_account_sign_in_refuses_replayed_or_foreign_state(idp: RunningIdP, person: Enrolled,
                                                            browser: requests.Session) -> None:
    options = browser.post(f"{idp.base_url}/account/login/options", json={}).json()
    credential = person.authenticator.get(options["publicKey"], credential_id=person.credential_id)
    with requests.Session() as other:  # another browser cannot use this browser's challenge
        refused = other.post(f"{idp.base_url}/account/login/assertion",
                             json={"state": options["state"], "credential": credential})
        assert refused.status_code == 403 and refused.json()["error"] == "other_browser"
    first = browser.post(f"{idp.base_url}/account/login/assertion", json={"state": options["state"],
                                                                          "credential": credential})
    assert first.status_code == 200
    again = browser.post(f"{idp.base_url}/account/login/assertion", json={"state": options["state"],
                                                                          "credential": credential})
    assert again.status_code == 400 and again.json()["error"] == "expired"
    tampered = browser.post(f"{idp.base_url}/account/login/assertion",
                            json={"state": options["state"][:-2] + "xx", "credential": credential})
    assert tampered.status_code == 400


def test_revoke_needs_confirmation_and_csrf_then_refuses_the_next_login(
        idp: RunningIdP, person: Enrolled, signed_in: requests.Session) -> None:
    base = idp.base_url
    second = core.enrol(idp)  # someone else's device: not revocable here
    assert page(signed_in, f"{base}/account/devices/{second.serial}/revoke").status_code == 404
    confirm = page(signed_in, f"{base}/account/devices/{person.serial}/revoke")
    assert confirm.status_code == 200 and "Stop this phone?" in confirm.text
    action = f"/account/devices/{person.serial}/revoke"
    token = csrf_from(confirm.text, action)

    forged = signed_in.post(base + action, data={"reason": "keyCompromise", "csrf_token": "0" * 64}, headers=HTML)
    assert forged.status_code == 403 and "Nothing was shared or changed" in forged.text
    no_reason = signed_in.post(base + action, data={"csrf_token": token}, headers=HTML)
    assert no_reason.status_code == 400
    foreign = signed_in.post(f"{base}/account/devices/{second.serial}/revoke",
                             data={"reason": "keyCompromise", "csrf_token": token}, headers=HTML)
    assert foreign.status_code == 403  # the token is bound to one device
    assert core.db_get(idp, DeviceCertificate, person.serial).state == "active"

    done = signed_in.post(base + action, data={"reason": "keyCompromise", "csrf_token": token},
                          headers=HTML, allow_redirects=False)
    assert done.status_code == 303 and "notice=device_revoked_self" in done.headers["Location"]
    device = core.db_get(idp, DeviceCertificate, person.serial)
    assert (device.state, device.revocation_reason) == ("revoked", "keyCompromise")
    assert core.db_get(idp, DeviceCertificate, second.serial).state == "active"
    events = [e for e in audit_events(idp, "certificate.revoked") if e["serial"] == person.serial]
    assert len(events) == 1 and events[0]["by"] == "person"

    # The session that device opened has ended; signing in with it again is refused.
    after = page(signed_in, urljoin(base, done.headers["Location"]))
    assert "You were signed in with it, so you are now signed out." in after.text
    assert "Your devices" not in after.text
    refused = sign_in(idp, signed_in, person)
    assert 400 <= refused.status_code < 500 and refused.json()["error"] == "certificate_revoked"
    rp = core.register(idp, "municipal")
    with requests.Session() as fresh, pytest.raises(Exception):
        core.login(idp, fresh, rp, person)


def test_revoking_twice_records_once(idp: RunningIdP, browser: requests.Session) -> None:
    base = idp.base_url
    card = core.card(idp)
    phone, old_phone = core.enrol(idp, card), core.enrol(idp, card)  # one person, two devices
    stranger = core.enrol(idp)
    assert sign_in(idp, browser, phone).status_code == 200
    action = f"/account/devices/{old_phone.serial}/revoke"
    token = csrf_from(page(browser, base + action).text, action)
    first = browser.post(base + action, data={"reason": "cessationOfOperation", "csrf_token": token},
                         headers=HTML, allow_redirects=False)
    assert first.headers["Location"].endswith("notice=device_revoked")
    second = browser.post(base + action, data={"reason": "cessationOfOperation", "csrf_token": token},
                          headers=HTML, allow_redirects=False)
    assert "notice=already_revoked" in second.headers["Location"]
    events = [e for e in audit_events(idp, "certificate.revoked") if e["serial"] == old_phone.serial]
    assert len(events) == 1
    html = page(browser, f"{base}/account").text  # still signed in with the other device
    assert f'data-serial="{old_phone.serial}" data-state="revoked"' in html
    assert f'data-serial="{phone.serial}" data-state="active"' in html
    assert f'data-serial="{stranger.serial}"' not in html
    assert "no longer used" in html


def test_consents_show_what_each_service_received_and_can_be_withdrawn(
        idp: RunningIdP, person: Enrolled, browser: requests.Session) -> None:
    base = idp.base_url
    rp = core.register(idp, "medical", client_name="<b>Clinic & Co</b>", **{"client_name#ja": "診療所"})
    result = core.login(idp, browser, rp, person)
    rp.userinfo(result.access_token)  # a disclosure through UserInfo
    html = page(browser, f"{base}/account").text  # the RP login's IdP session counts here
    assert "&lt;b&gt;Clinic &amp; Co&lt;/b&gt;" in html and "<b>Clinic" not in html
    assert f'data-client="{rp.client_id}"' in html
    assert "when the service asked again later" in html and "Medical institution" in html
    assert result.sub in html  # the identifier that service knows the person by
    assert "診療所" in page(browser, f"{base}/account?lang=ja").text
    page(browser, f"{base}/account?lang=en")

    action = f"/account/consents/{rp.client_id}/withdraw"
    confirm = page(browser, base + action)
    assert confirm.status_code == 200
    token = csrf_from(confirm.text, action)
    assert browser.post(base + action, data={"csrf_token": token[::-1]}, headers=HTML).status_code == 403
    done = browser.post(base + action, data={"csrf_token": token}, headers=HTML, allow_redirects=False)
    assert "notice=consent_withdrawn" in done.headers["Location"]
    again = browser.post(base + action, data={"csrf_token": token}, headers=HTML, allow_redirects=False)
    assert "notice=already_withdrawn" in again.headers["Location"]
    assert len([e for e in audit_events(idp, "consent.withdrawn") if e["client"] == rp.client_id]) == 1
    with core.db(idp) as session:
        consent = session.scalars(select(Consent).where(Consent.client_id == rp.client_id)).one()
        assert consent.withdrawn_at is not None
    with pytest.raises(RPError):
        rp.userinfo(result.access_token)  # withdrawal ends the grant at once
    # Another person's consent cannot be reached from this session.
    assert page(browser, f"{base}/account/consents/unknown-client/withdraw").status_code == 404


def test_export_is_the_persons_data_only(idp: RunningIdP, person: Enrolled, signed_in: requests.Session) -> None:
    base = idp.base_url
    html = page(signed_in, f"{base}/account").text
    token = csrf_from(html, "/account/export")
    assert signed_in.post(f"{base}/account/export", data={}, headers=HTML).status_code == 403
    response = signed_in.post(f"{base}/account/export", data={"csrf_token": token})
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    data = response.json()
    assert data["verified_attributes"]["name"] == "前橋　太郎"
    assert data["verified_attributes"]["birthdate"] == "1980-01-01"
    assert [d["serial"] for d in data["devices"]] == [person.serial]
    assert data["devices"][0]["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    text = json.dumps(data)
    assert "acct-" not in text and "digest" not in text  # no internal id, no keyed card digests
    assert audit_events(idp, "account.data_exported")


def test_sign_out_is_a_confirmed_post(idp: RunningIdP, signed_in: requests.Session) -> None:
    base = idp.base_url
    token = csrf_from(page(signed_in, f"{base}/account").text, "/account/logout")
    assert signed_in.post(f"{base}/account/logout", data={}, headers=HTML).status_code == 403
    done = signed_in.post(f"{base}/account/logout", data={"csrf_token": token}, headers=HTML)
    assert done.status_code == 200 and "You are signed out." in done.text
    assert 'data-action="passkey"' in done.text
    assert urlsplit(done.url).path == "/account"


def test_changes_without_a_session_grant_nothing(idp: RunningIdP, person: Enrolled) -> None:
    with requests.Session() as stranger:
        confirm = page(stranger, f"{idp.base_url}/account/devices/{person.serial}/revoke", allow_redirects=False)
        assert confirm.status_code == 303 and confirm.headers["Location"].endswith("/account")
        posted = stranger.post(f"{idp.base_url}/account/devices/{person.serial}/revoke",
                               data={"reason": "keyCompromise", "csrf_token": "x"}, headers=HTML)
        assert posted.status_code == 403
        exported = stranger.post(f"{idp.base_url}/account/export", data={"csrf_token": "x"}, headers=HTML)
        assert exported.status_code == 403
    assert core.db_get(idp, DeviceCertificate, person.serial).state == "active"
