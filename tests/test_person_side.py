"""The person's way out and way back, over real HTTP (the browser tests show the same at a
phone's size): cancel on the login page, "the numbers differ — stop" from the phone, live
progress of a cross-device sign-in, recovery with only the card after losing the phone,
consent "remember" for sensitive categories, and the help page.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests

from idp.storage.models import AuthorizationTransaction, DeviceCertificate
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import AuthorizationError, RelyingParty, login_status
from tests.support.wallet import Enrolled, WalletError


@pytest.fixture(scope="module")
def rp(idp: RunningIdP) -> RelyingParty:
    return core.register(idp, "municipal")


def _hidden(html: str, form_action: str, name: str) -> str:
    form = html.split(f'action="{form_action}"', 1)[1].split("</form>", 1)[0]
    match = re.search(rf'name="{name}" value="([^"]*)"', form)
    assert match, f"no {name} in the {form_action} form"
    return match.group(1)


def _login_page(idp: RunningIdP, browser: requests.Session, txn: str) -> str:
    page = browser.get(f"{idp.base_url}/login", params={"txn": txn}, timeout=10)
    assert page.status_code == 200
    return page.text


# cancel and return to the service (OIDC Core §3.1.2.6, RFC 9207) -------------------------
def test_cancel_answers_the_service_with_access_denied_state_and_iss(idp: RunningIdP, rp: RelyingParty,
                                                                     browser: requests.Session) -> None:
    txn = core.start_login(rp, browser)
    html = _login_page(idp, browser, txn)
    answer = browser.post(f"{idp.base_url}/login/cancel", allow_redirects=False, timeout=10,
                          data={"txn": txn, "csrf_token": _hidden(html, "/login/cancel", "csrf_token")})
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(rp.redirect_uri)
    params = dict(parse_qsl(urlsplit(location).query))
    assert params["iss"] == idp.settings.issuer and "code" not in params
    with pytest.raises(AuthorizationError) as refused:
        rp.parse_callback(location)  # the RP's own checks: its state, our iss
    assert refused.value.error == "access_denied"
    with core.db(idp) as session:
        assert session.get(AuthorizationTransaction, txn).state == "denied"
    again = browser.get(f"{idp.base_url}/login", params={"txn": txn}, timeout=10)
    assert again.status_code == 409 and 'data-role="next-step"' in again.text


def test_cancel_needs_the_form_token_and_the_opening_browser(idp: RunningIdP, rp: RelyingParty,
                                                             browser: requests.Session) -> None:
    txn = core.start_login(rp, browser)
    token = _hidden(_login_page(idp, browser, txn), "/login/cancel", "csrf_token")
    forged = browser.post(f"{idp.base_url}/login/cancel", data={"txn": txn, "csrf_token": "0" * 64},
                          allow_redirects=False, timeout=10)
    assert forged.status_code == 403
    with requests.Session() as other:
        stranger = other.post(f"{idp.base_url}/login/cancel", data={"txn": txn, "csrf_token": token},
                              allow_redirects=False, timeout=10)
    assert stranger.status_code == 403
    with core.db(idp) as session:
        assert session.get(AuthorizationTransaction, txn).state == "pending"  # nothing changed


# the phone: progress and "the numbers differ" -------------------------------------------
def test_phone_opening_shows_progress_and_numbers_differ_fails_the_sign_in(
        idp: RunningIdP, rp: RelyingParty, browser: requests.Session) -> None:
    txn = core.start_login(rp, browser)
    assert "phone" not in login_status(browser, idp.base_url, txn)
    with requests.Session() as phone:
        page = phone.get(f"{idp.base_url}/login/wallet", params={"txn": txn}, timeout=10)
        assert page.status_code == 200 and 'data-action="mismatch"' in page.text
        assert 'data-role="requested-at"' in page.text and 'data-role="service-address"' in page.text
        status = login_status(browser, idp.base_url, txn)
        assert status == {"status": "pending", "phone": "opened"}
        stop = phone.post(f"{idp.base_url}/login/mismatch", json={"txn": txn}, timeout=10)
        assert stop.status_code == 200 and stop.json()["error"] == "code_mismatch"
        again = phone.post(f"{idp.base_url}/login/mismatch", json={"txn": txn}, timeout=10)
        assert again.status_code == 400 and again.json()["error"] == "invalid_transaction"
    assert login_status(browser, idp.base_url, txn) == {"status": "failed", "error": "code_mismatch"}
    with pytest.raises(WalletError):  # the challenge can no longer be signed
        idp.wallet().login(txn, authenticator=core.enrol(idp))


@pytest.mark.parametrize("body", [{}, {"txn": 7}, {"txn": "unknown"}])
def test_numbers_differ_refuses_bad_input(idp: RunningIdP, body: dict) -> None:
    answer = requests.post(f"{idp.base_url}/login/mismatch", json=body, timeout=10)
    assert 400 <= answer.status_code < 500 and "error" in answer.json()


# recovery with only the card (a fresh JPKI proof on a new phone) --------------------------
def test_recovery_with_the_card_keeps_the_account_and_sub_and_stops_the_lost_phone(
        idp: RunningIdP, rp: RelyingParty) -> None:
    card = core.card(idp)
    lost = core.enrol(idp, card)
    with requests.Session() as browser:
        before = core.login(idp, browser, rp, lost).sub
    wallet = idp.wallet()
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    finished = wallet.finish(start, card, authenticator)
    credential = authenticator.get(dict(finished.activation_options), credential_id=finished.credential_id)
    answer = wallet.call("/enroll/activate", {"enrollment_id": finished.enrollment_id, "credential": credential,
                                              "revoke_other_devices": True})
    assert answer["status"] == "active" and answer["revoked_devices"] == 1
    new = Enrolled(enrollment_id=finished.enrollment_id, serial=answer["serial"],
                   certificate_der=finished.certificate_der, ca_chain=finished.ca_chain,
                   authenticator=authenticator, credential_id=finished.credential_id, finish_response=finished.raw)
    with core.db(idp) as session:
        old_row = session.get(DeviceCertificate, lost.serial)
        assert old_row.state == "revoked" and old_row.revocation_reason == "keyCompromise"
        assert session.get(DeviceCertificate, new.serial).account_id == old_row.account_id
    with requests.Session() as browser:
        assert core.login(idp, browser, rp, new).sub == before
    with requests.Session() as browser, pytest.raises(WalletError) as refused:
        core.login(idp, browser, rp, lost)
    assert refused.value.body["error"] == "certificate_revoked"


def test_recovery_flag_must_be_a_boolean(idp: RunningIdP) -> None:
    wallet = idp.wallet()
    answer = wallet.post("/enroll/activate", {"enrollment_id": "x", "credential": {}, "revoke_other_devices": "yes"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


# consent and help ------------------------------------------------------------------------
@pytest.mark.parametrize("category, ticked", [("medical", False), ("municipal", True)])
def test_consent_shows_contact_and_retention_and_remember_is_an_act_for_medical(
        idp: RunningIdP, browser: requests.Session, category: str, ticked: bool) -> None:
    rp = core.register(idp, category, contacts=["privacy@clinic.example"], policy_uri="https://clinic.example/p")
    location = rp.start(browser)
    idp.wallet(browser).login(core.txn_of(location), authenticator=core.enrol(idp))
    page = browser.get(urljoin(idp.base_url, f"/consent?txn={core.txn_of(location)}"), timeout=10).text
    assert "privacy@clinic.example" in page and 'data-role="retention"' in page
    assert 'href="https://clinic.example/p"' in page
    box = re.search(r'<input type="checkbox" id="remember"[^>]*>', page)
    assert box and ("checked" in box.group(0)) is ticked


def test_help_page_in_japanese_names_every_topic(idp: RunningIdP) -> None:
    page = requests.get(f"{idp.base_url}/help", headers={"Accept-Language": "ja"}, timeout=10)
    assert page.status_code == 200
    for topic in ("lost", "locked", "new-phone", "new-card", "contact"):
        assert f'data-topic="{topic}"' in page.text
    assert "スマートフォンをなくした" in page.text


# development: the person's pages at the issuer's host name (a passkey belongs to a domain) ----
def test_person_pages_at_the_other_loopback_name_go_to_the_issuer_host(idp: RunningIdP) -> None:
    port = urlsplit(idp.base_url).port
    issuer_host = urlsplit(idp.settings.issuer).hostname
    other = "localhost" if issuer_host == "127.0.0.1" else "127.0.0.1"
    moved = requests.get(f"http://{other}:{port}/login?txn=abc", allow_redirects=False, timeout=10)
    assert moved.status_code == 302 and moved.headers["Location"] == f"{idp.settings.issuer}/login?txn=abc"
    stays = requests.get(f"http://{other}:{port}/.well-known/openid-configuration", allow_redirects=False, timeout=10)
    assert stays.status_code == 200  # only the person's pages move; the demo services stay too
    assert requests.get(f"{idp.base_url}/help", allow_redirects=False, timeout=10).status_code == 200
