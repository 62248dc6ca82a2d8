"""Small enrolment and consent behaviours around the core path."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp.storage.models import AuditEntry, DeviceCertificate
from tests.support.rp import RelyingParty


def test_model_hint_is_kept_printable_and_short(idp):
    enrolled = idp.wallet().enroll(idp.card(), tamper={"body": {"model_hint": "Pixel 9\x07" + "x" * 300}})
    with idp.services().db.transaction() as session:
        device = session.get(DeviceCertificate, enrolled.serial)
        assert device.model_hint.startswith("Pixel 9x") and len(device.model_hint) == 120
        assert "\x07" not in device.model_hint


def test_consent_page_before_signing_returns_to_the_login_page(idp, browser):
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="medical")
    location = rp.start(browser)
    txn = location.split("txn=")[1]
    response = browser.get(f"{idp.base_url}/consent?txn={txn}", allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/login?txn={txn}")


def test_denied_consent_is_audited(idp, browser):
    from tests.support.rp import AuthorizationError, browser_login

    wallet = idp.wallet()
    enrolled = wallet.enroll(idp.card())
    rp = RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="medical")
    callback = browser_login(browser, idp.base_url, rp.start(browser), wallet, enrolled, consent="deny")
    with pytest.raises(AuthorizationError) as error:
        rp.parse_callback(callback)
    assert error.value.error == "access_denied"
    with idp.services().db.transaction() as session:
        events = session.scalars(select(AuditEntry.event).where(AuditEntry.event == "consent.denied")).all()
    assert events
