"""Login at an RP over real HTTP (PROTOCOL.md §4): every check of /login/assertion,
lock-out, the authorization endpoint's error handling, cross-device binding, consent
and the single use of authorization codes.

Each refusal is a 4xx JSON ``{"error", "error_description"}``; each test also shows the
refusal was about the one thing it changed (a good login still works where it should).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from idp.ca import lifecycle
from idp.storage.models import AuditEntry, AuthorizationTransaction, Consent, DeviceCertificate, utcnow
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.authenticator import SoftAuthenticator, b64url
from tests.support.lifecycle import lock_state, set_lock_state
from tests.support.rp import (
    AuthorizationError,
    RelyingParty,
    RPError,
    browser_login,
    login_status,
    parse_consent_form,
)
from tests.support.wallet import Enrolled, Wallet, WalletError

EVIL_ORIGIN = "https://evil.example"


@pytest.fixture
def device(idp: RunningIdP) -> Enrolled:
    """A new person with one active device certificate."""
    return core.enrol(idp)


@pytest.fixture(scope="module")
def rp(idp: RunningIdP) -> RelyingParty:
    return core.register(idp, "municipal")


def refused(wallet: Wallet, txn: str, device: Enrolled, *, error: str | None = None, status: int | None = None,
            **overrides: Any) -> WalletError:
    """An assertion for ``txn`` that must be refused with a 4xx JSON error."""
    with pytest.raises(WalletError) as failure:
        wallet.login(txn, authenticator=device, **overrides)
    core.error_of(failure.value, error=error, status=status)
    return failure.value


def good_login_works(idp: RunningIdP, rp: RelyingParty, device: Enrolled) -> None:
    """A control: the same device, properly used, in a fresh browser, logs in."""
    with requests.Session() as fresh:
        assert core.login(idp, fresh, rp, device).sub


# step 4: the assertion ----------------------------------------------------------------
def test_good_assertion_authenticates(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    txn = core.start_login(rp, browser)
    wallet = idp.wallet(browser)
    answer = wallet.login(txn, authenticator=device)
    assert answer["status"] == "authenticated"
    assert urlsplit(urljoin(idp.base_url, answer["next"])).path == "/consent"
    options = wallet.last_login_options
    assert options["rp"]["category"] == "municipal"
    assert {"name", "address", "birthdate", "gender"} <= set(options["rp"]["claims"])
    assert len(options["publicKey"]["challenge"]) >= 43  # ≥ 32 bytes
    assert options["publicKey"]["userVerification"] == "required"


@pytest.mark.parametrize(("overrides", "error"), [
    ({"type_override": "webauthn.create"}, "type_mismatch"),
    ({"origin": EVIL_ORIGIN}, "origin_mismatch"),
    ({"rp_id_hash_override": hashlib.sha256(b"evil.example").digest()}, "rp_id_mismatch"),
    ({"up": False}, "user_not_present"),
    ({"uv": False}, "user_not_verified"),
    ({"challenge_override": os.urandom(32)}, "challenge_mismatch"),
], ids=["type-create", "wrong-origin", "wrong-rp-id-hash", "up-missing", "uv-missing", "random-challenge"])
def test_bad_assertion_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser,  # type: ignore[no-untyped-def]
                                  overrides: dict, error: str) -> None:
    txn = core.start_login(rp, browser)
    refused(idp.wallet(browser), txn, device, error=error, **overrides)
    assert login_status(browser, idp.base_url, txn)["status"] == "failed"
    good_login_works(idp, rp, device)


def test_bad_signature_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    txn = core.start_login(rp, browser)
    refused(idp.wallet(browser), txn, device, error="bad_signature",
            sign_with=ec.generate_private_key(ec.SECP256R1()))
    good_login_works(idp, rp, device)


def test_challenge_of_another_transaction_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                     browser) -> None:
    wallet = idp.wallet(browser)
    mine = core.start_login(rp, browser)
    other = core.start_login(rp, browser)
    options = wallet.login_options(other)
    credential = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    with pytest.raises(WalletError) as failure:
        wallet.login_assertion(mine, credential)
    core.error_of(failure.value, error="challenge_mismatch")


def test_challenge_reuse_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    wallet = idp.wallet(browser)
    txn = core.start_login(rp, browser)
    options = wallet.login_options(txn)
    first = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    second = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    assert wallet.login_assertion(txn, first)["status"] == "authenticated"
    for replay in (first, second):  # the same response, or a fresh signature over the used challenge
        with pytest.raises(WalletError) as failure:
            wallet.login_assertion(txn, replay)
        core.error_of(failure.value)
    # Options for a finished transaction are not handed out again either.
    with pytest.raises(WalletError) as failure:
        wallet.login_options(txn)
    core.error_of(failure.value)


def test_one_bad_assertion_ends_the_transaction(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                browser) -> None:
    wallet = idp.wallet(browser)
    txn = core.start_login(rp, browser)
    refused(wallet, txn, device, error="user_not_verified", uv=False)
    refused(wallet, txn, device)  # a good one after it cannot use the spent challenge


def test_unknown_credential_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    wallet = idp.wallet(browser)
    txn = core.start_login(rp, browser)
    stranger = SoftAuthenticator(idp.settings.rp_id, idp.settings.issuer_origin)
    stranger.create({"challenge": b64url(os.urandom(32)), "user": {"id": b64url(os.urandom(32))}})
    options = wallet.login_options(txn)
    with pytest.raises(WalletError) as failure:
        wallet.login_assertion(txn, stranger.get(options["publicKey"]))
    core.error_of(failure.value, error="unknown_credential")


def test_user_handle_of_another_credential_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                      browser) -> None:
    wallet = idp.wallet(browser)
    txn = core.start_login(rp, browser)
    options = wallet.login_options(txn)
    credential = device.authenticator.get(options["publicKey"], credential_id=device.credential_id)
    credential["response"]["userHandle"] = b64url(os.urandom(32))
    with pytest.raises(WalletError) as failure:
        wallet.login_assertion(txn, credential)
    core.error_of(failure.value)


@pytest.mark.parametrize("counter", ["equal", "lower"])
def test_counter_regression_suspends_the_certificate(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                     browser, counter: str) -> None:
    core.login(idp, browser, rp, device)
    stored = core.db_get(idp, DeviceCertificate, device.serial).sign_count
    assert stored > 0
    with requests.Session() as clone_browser:
        txn = core.start_login(rp, clone_browser)
        refused(idp.wallet(clone_browser), txn, device, error="counter_regression",
                counter=stored if counter == "equal" else stored - 1)
    assert core.db_get(idp, DeviceCertificate, device.serial).state == lifecycle.SUSPENDED
    with requests.Session() as later:
        txn = core.start_login(rp, later)
        refused(idp.wallet(later), txn, device, error="certificate_suspended")
    # The session the genuine login opened ends with the certificate's suspension.
    assert _silent(rp, browser)["error"] == "login_required"


def test_forged_counter_regression_does_not_suspend(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                    browser) -> None:
    """A low counter under a bad signature is a forgery, not a clone: no suspension."""
    core.login(idp, browser, rp, device)
    with requests.Session() as attacker:
        txn = core.start_login(rp, attacker)
        refused(idp.wallet(attacker), txn, device, error="bad_signature", counter=0,
                sign_with=ec.generate_private_key(ec.SECP256R1()))
    assert core.db_get(idp, DeviceCertificate, device.serial).state == "active"


# the certificate's state ---------------------------------------------------------------
def _cli_env(idp: RunningIdP) -> dict[str, str]:
    """The deployment environment the operator's command runs with."""
    s = idp.settings
    return {
        "IDP_ISSUER": s.issuer,
        "IDP_KEYS_DIR": str(s.keys_dir),
        "IDP_INSTANCE_DIR": str(s.instance_dir),
        "IDP_DATABASE_URL": s.database_url,
        "IDP_JPKI_TRUST_ANCHORS": str(s.jpki_trust_anchors),
        "IDP_RATE_LIMIT_PER_MINUTE": "0",
    }


def _revoke(idp: RunningIdP, serial: str, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "cli":
        from idp.cli import main

        for name, value in _cli_env(idp).items():
            monkeypatch.setenv(name, value)
        assert main(["ca", "revoke", serial, "--reason", "keyCompromise"]) == 0
    else:
        with idp.app.app_context(), core.db(idp) as session:
            lifecycle.revoke(session, lifecycle.find(session, serial), reason="keyCompromise", by="test")


@pytest.mark.parametrize("how", ["lifecycle", "cli"])
def test_revoked_certificate_never_logs_in(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser,  # type: ignore[no-untyped-def]
                                           how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    core.login(idp, browser, rp, device)
    assert device.serial
    _revoke(idp, device.serial, how, monkeypatch)
    assert core.db_get(idp, DeviceCertificate, device.serial).state == "revoked"
    with requests.Session() as fresh:
        txn = core.start_login(rp, fresh)
        refused(idp.wallet(fresh), txn, device, error="certificate_revoked")
    # Nor does the session it opened before the revocation answer prompt=none.
    assert _silent(rp, browser)["error"] == "login_required"


def test_expired_certificate_never_logs_in(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    core.login(idp, browser, rp, device)
    core.db_update(idp, DeviceCertificate, device.serial, not_after=core.ago(1))
    with requests.Session() as fresh:
        txn = core.start_login(rp, fresh)
        refused(idp.wallet(fresh), txn, device, error="certificate_expired")
    assert _silent(rp, browser)["error"] == "login_required"


# lock-out ---------------------------------------------------------------------------------
def test_repeated_failures_lock_the_credential(idp: RunningIdP, rp: RelyingParty, device: Enrolled) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(5):
        with requests.Session() as attacker:
            txn = core.start_login(rp, attacker)
            refused(idp.wallet(attacker), txn, device, sign_with=forger)
    locked_until = lock_state(idp, device.serial).locked_until
    assert locked_until is not None and locked_until > utcnow()
    # Even a genuine signature is refused while the lock lasts, with a clear error.
    with requests.Session() as owner:
        txn = core.start_login(rp, owner)
        failure = refused(idp.wallet(owner), txn, device, status=423, error="credential_locked")
    match = re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", failure.description or "")
    assert match, f"the error does not say until when: {failure.description!r}"
    until = datetime.strptime(match.group(0), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert until == locked_until
    retry_after = int(failure.response.headers["Retry-After"])
    assert 0 < retry_after <= 24 * 3600
    assert abs(retry_after - (locked_until - utcnow()).total_seconds()) < 5
    # Audited, and the lock ends by itself.
    with core.db(idp) as session:
        events = session.scalars(select(AuditEntry).where(AuditEntry.event == "device.locked")).all()
        assert any(e.data.get("serial") == device.serial for e in events)
    set_lock_state(idp, device.serial, locked_until=core.ago(1))
    good_login_works(idp, rp, device)


def test_a_success_resets_the_failure_count(idp: RunningIdP, rp: RelyingParty, device: Enrolled) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    for round_ in range(2):
        for _ in range(4):
            with requests.Session() as attacker:
                refused(idp.wallet(attacker), core.start_login(rp, attacker), device, sign_with=forger)
        good_login_works(idp, rp, device)
    assert lock_state(idp, device.serial).locked_until is None


# the authorization endpoint ------------------------------------------------------------------
def _authorize(rp: RelyingParty, browser: requests.Session, **params: Any) -> requests.Response:
    url, *_ = rp.authorization_url(**params)
    return browser.get(url, allow_redirects=False, headers={"Accept": "text/html"}, timeout=10)


def test_unregistered_redirect_uri_gets_an_error_page(rp: RelyingParty, browser) -> None:  # type: ignore[no-untyped-def]
    for target in ("http://127.0.0.1:9/elsewhere", "https://evil.example/cb", "http://127.0.0.1:10/cb"):
        response = _authorize(rp, browser, redirect_uri=target)
        assert 400 <= response.status_code < 500, (target, response.status_code)
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("text/html")


def test_unknown_client_gets_an_error_page(idp: RunningIdP, rp: RelyingParty, browser) -> None:  # type: ignore[no-untyped-def]
    query = urlencode({"client_id": "no-such-client", "redirect_uri": rp.redirect_uri, "response_type": "code",
                       "scope": "openid", "state": "s", "code_challenge": "x" * 43, "code_challenge_method": "S256"})
    for url in (f"{idp.base_url}/authorize?{query}",
                f"{idp.base_url}/authorize?response_type=code&scope=openid&redirect_uri={rp.redirect_uri}"):
        response = browser.get(url, allow_redirects=False, headers={"Accept": "text/html"}, timeout=10)
        assert 400 <= response.status_code < 500
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("pkce", [None, "plain"], ids=["no-pkce", "plain-pkce"])
def test_pkce_missing_or_plain_is_an_error_redirect(idp: RunningIdP, rp: RelyingParty, browser,  # type: ignore[no-untyped-def]
                                                     pkce: str | None) -> None:
    location = rp.start(browser, pkce=pkce)
    with pytest.raises(AuthorizationError) as failure:
        rp.parse_callback(location)  # checks state and iss (RFC 9207) before the error
    assert failure.value.error == "invalid_request"
    assert failure.value.params["state"] == rp.last_request.state
    assert failure.value.params["iss"] == idp.base_url


# cross-device and the browser binding --------------------------------------------------------
def test_login_status_from_another_browser_is_forbidden(idp: RunningIdP, rp: RelyingParty, device: Enrolled,  # type: ignore[no-untyped-def]
                                                        browser) -> None:
    txn = core.start_login(rp, browser)
    assert login_status(browser, idp.base_url, txn)["status"] == "pending"
    with requests.Session() as stranger:
        response = stranger.get(f"{idp.base_url}/login/status", params={"txn": txn},
                                headers={"Accept": "application/json"}, timeout=10)
        core.error_of(response, status=403)
        page = stranger.get(f"{idp.base_url}/login", params={"txn": txn}, allow_redirects=False, timeout=10)
        assert page.status_code == 403


def test_cross_device_login_gives_the_session_to_the_browser_only(idp: RunningIdP, rp: RelyingParty,  # type: ignore[no-untyped-def]
                                                                  device: Enrolled, browser) -> None:
    phone = idp.wallet()  # the phone: its own HTTP session, never the browser's cookies
    txn = core.start_login(rp, browser)
    page = browser.get(f"{idp.base_url}/login", params={"txn": txn}, timeout=10)
    assert page.status_code == 200 and 'data-action="qr"' in page.text
    assert login_status(browser, idp.base_url, txn)["status"] == "pending"
    answer = phone.login(txn, authenticator=device)
    assert answer["status"] == "authenticated"
    # What the phone is told to open is useless to it: it is not the opening browser.
    assert phone.session.get(urljoin(idp.base_url, answer["next"]), allow_redirects=False,
                             timeout=10).status_code == 403
    core.error_of(phone.session.get(f"{idp.base_url}/login/status", params={"txn": txn},
                                    headers={"Accept": "application/json"}, timeout=10), status=403)
    status = login_status(browser, idp.base_url, txn)
    assert status["status"] == "authenticated"
    cb = browser_login(browser, idp.base_url, status["next"], phone, device, redirect_uri=rp.redirect_uri)
    result = rp.finish(cb)
    assert result.sub
    # An approval from another device answered this one request and gives no single sign-on,
    # neither to the browser (OAuth Cross-Device Flows Security BCP) nor to the phone.
    assert _silent(rp, browser)["error"] == "login_required"
    assert _silent(rp, phone.session)["error"] == "login_required"


def test_failed_cross_device_login_is_reported_to_the_browser(idp: RunningIdP, rp: RelyingParty,  # type: ignore[no-untyped-def]
                                                              device: Enrolled, browser) -> None:
    txn = core.start_login(rp, browser)
    refused(idp.wallet(), txn, device, uv=False)
    status = login_status(browser, idp.base_url, txn)
    assert status["status"] == "failed" and "next" not in status


def _silent(rp: RelyingParty, session: requests.Session) -> dict[str, str]:
    """prompt=none: the callback's parameters (an error, or a code)."""
    location = rp.start(session, prompt="none")
    params = dict(parse_qsl(urlsplit(location).query))
    assert location.startswith(rp.redirect_uri)
    return params


# consent -------------------------------------------------------------------------------------
def _consent_page(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser: requests.Session) -> tuple[str, Any]:
    txn = core.start_login(rp, browser)
    answer = idp.wallet(browser).login(txn, authenticator=device)
    page = browser.get(urljoin(idp.base_url, answer["next"]), allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.status_code
    return txn, parse_consent_form(page.text)


def _post_consent(idp: RunningIdP, browser: requests.Session, form: Any, decision: str = "allow",
                  **overrides: str) -> requests.Response:
    pairs = [(k, overrides.get(k, v)) for k, v in form.submission(decision)]
    return browser.post(urljoin(idp.base_url, form.action), data=pairs, allow_redirects=False, timeout=10)


def _granted(idp: RunningIdP, rp: RelyingParty) -> tuple[int, int]:
    return (core.db_count(idp, Consent, Consent.client_id == rp.client_id),
            core.db_count(idp, AuthorizationTransaction, AuthorizationTransaction.client_id == rp.client_id,
                          AuthorizationTransaction.code_hash.is_not(None)))


def test_consent_deny_redirects_access_denied(idp: RunningIdP, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    rp = core.register(idp)
    cb = core.callback(idp, browser, rp, device, consent="deny")
    with pytest.raises(AuthorizationError) as failure:
        rp.parse_callback(cb)
    assert failure.value.error == "access_denied"
    assert failure.value.params["state"] == rp.last_request.state
    assert failure.value.params["iss"] == idp.base_url
    assert "code" not in failure.value.params
    assert _granted(idp, rp) == (0, 0)


def test_consent_with_a_wrong_csrf_token_grants_nothing(idp: RunningIdP, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    rp = core.register(idp)
    _, form = _consent_page(idp, rp, device, browser)
    for token in ("0" * 64, "", form.csrf_token[:-1] + ("0" if form.csrf_token[-1] != "0" else "1")):
        response = _post_consent(idp, browser, form, csrf_token=token)
        assert response.status_code == 403 and "Location" not in response.headers
        assert _granted(idp, rp) == (0, 0)
    # The same form, lifted into another browser with its valid token, grants nothing either.
    with requests.Session() as other:
        response = _post_consent(idp, other, form)
        assert response.status_code == 403 and "Location" not in response.headers
    assert _granted(idp, rp) == (0, 0)
    # The genuine submission still works: the refusals above were the CSRF check.
    allowed = _post_consent(idp, browser, form)
    assert allowed.status_code == 302 and "code=" in allowed.headers["Location"]
    assert _granted(idp, rp) == (1, 1)


def test_consent_double_submit_grants_once(idp: RunningIdP, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    rp = core.register(idp)
    _, form = _consent_page(idp, rp, device, browser)
    first = _post_consent(idp, browser, form)
    assert first.status_code == 302
    second = _post_consent(idp, browser, form)
    assert 400 <= second.status_code < 500 and "Location" not in second.headers
    assert _granted(idp, rp) == (1, 1)
    denial = _post_consent(idp, browser, form, decision="deny")
    assert 400 <= denial.status_code < 500 and "Location" not in denial.headers
    assert rp.finish(urljoin(idp.base_url, first.headers["Location"])).sub


def test_same_device_remembered_consent_answers_with_the_assertion(idp: RunningIdP, device: Enrolled) -> None:
    """A remembered consent needs no page: the assertion's ``next`` is the service's redirect
    URI with the code, ``state`` and ``iss``; the transaction is then answered (its consent
    page refuses), and the code works once."""
    rp = core.register(idp)
    with requests.Session() as first:
        core.login(idp, first, rp, device)  # the consent is given and remembered
    with requests.Session() as browser:
        txn = core.start_login(rp, browser)
        answer = idp.wallet(browser).login(txn, authenticator=device)
        request, params = rp.parse_callback(answer["next"])
        assert answer["next"].startswith(rp.redirect_uri)
        assert params["state"] == rp.last_request.state and params["iss"] == idp.base_url
        consent = browser.get(urljoin(idp.base_url, f"/consent?txn={txn}"), allow_redirects=False, timeout=10)
        assert 400 <= consent.status_code < 500 and "Location" not in consent.headers
        assert rp.exchange(params["code"], request).sub
    assert _granted(idp, rp) == (1, 2)


@pytest.mark.parametrize("extra", [{"prompt": "consent"}, {"scope": "openid profile address"}],
                         ids=["prompt-consent", "more-claims"])
def test_same_device_login_shows_the_consent_page_when_the_remembered_one_does_not_answer(
        idp: RunningIdP, device: Enrolled, extra: dict[str, str]) -> None:
    rp = core.register(idp, "municipal")
    with requests.Session() as first:
        rp.finish(browser_login(first, idp.base_url, rp.start(first, scope="openid profile"),
                                idp.wallet(first), device))
    with requests.Session() as browser:
        txn = core.start_login(rp, browser, **extra)
        answer = idp.wallet(browser).login(txn, authenticator=device)
        assert urlsplit(urljoin(idp.base_url, answer["next"])).path == "/consent"
        page = browser.get(urljoin(idp.base_url, answer["next"]), allow_redirects=False, timeout=10)
        assert page.status_code == 200 and parse_consent_form(page.text).txn == txn


# the token endpoint ------------------------------------------------------------------------
def test_code_reuse_is_refused_and_revokes_its_access_token(idp: RunningIdP, rp: RelyingParty,  # type: ignore[no-untyped-def]
                                                            device: Enrolled, browser) -> None:
    request, params = rp.parse_callback(core.callback(idp, browser, rp, device))
    result = rp.exchange(params["code"], request)
    assert rp.userinfo(result.access_token)["sub"] == result.sub
    with pytest.raises(RPError) as failure:
        rp.exchange(params["code"], request)
    assert failure.value.error == "invalid_grant"
    with pytest.raises(RPError) as gone:
        rp.userinfo(result.access_token)
    assert gone.value.status == 401


def test_code_of_another_client_is_refused(idp: RunningIdP, rp: RelyingParty, device: Enrolled, browser) -> None:  # type: ignore[no-untyped-def]
    request, params = rp.parse_callback(core.callback(idp, browser, rp, device))
    thief = core.register(idp)
    with pytest.raises(RPError) as failure:
        thief.exchange(params["code"], request)
    assert failure.value.error == "invalid_grant"
    assert rp.exchange(params["code"], request).sub  # the rightful client still redeems it


# malformed login input -----------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    {}, {"txn": 5}, {"txn": ""}, {"txn": "x" * 500}, {"txn": "no-such-transaction"}, {"txn": "\udc80"},
], ids=["empty", "int", "blank", "oversize", "unknown", "lone-surrogate"])
@pytest.mark.parametrize("path", ["/login/options", "/login/assertion"])
def test_malformed_login_requests_are_4xx(idp: RunningIdP, path: str, body: dict) -> None:
    core.error_of(idp.wallet().post(path, body))


@pytest.mark.parametrize("credential", [
    None, "x", [], {"id": "AA"}, {"id": "***", "rawId": "***", "type": "public-key", "response": {}},
], ids=["null", "string", "list", "partial", "bad-base64"])
def test_malformed_assertion_credential_is_4xx(idp: RunningIdP, rp: RelyingParty, browser, credential: Any) -> None:  # type: ignore[no-untyped-def]
    txn = core.start_login(rp, browser)
    core.error_of(idp.wallet().post("/login/assertion", {"txn": txn, "credential": credential}))
