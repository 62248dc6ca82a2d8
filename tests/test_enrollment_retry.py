"""A lost ``/enroll/finish`` answer can be fetched again (issue 15): the very same request
(same enrolment, same credential, same card) gets the same answer and issues nothing new;
anything else on a finished enrolment is refused as before."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from idp.proofing.jpki import binding_message
from idp.storage.models import DeviceCertificate, Enrollment, JpkiBinding, utcnow
from tests.support.wallet import b64url_decode


def _without_countdown(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "expires_in"}


def _certificates_of(idp, credential_id: bytes) -> int:
    with idp.services().db.transaction() as session:
        return session.scalar(select(func.count()).select_from(DeviceCertificate)
                              .where(DeviceCertificate.credential_id == credential_id))


def _finished(idp, card=None):
    wallet = idp.wallet()
    authenticator = wallet.new_authenticator()
    card = card or idp.card()
    start = wallet.begin()
    body = wallet.finish_body(start, card, authenticator)
    first = wallet.post("/enroll/finish", body)
    assert first.status_code == 201, first.text
    return wallet, authenticator, card, start, body, first.json()


def test_a_retried_finish_gets_the_same_answer_and_issues_nothing_new(idp):
    wallet, authenticator, _, _, body, first = _finished(idp)
    again = wallet.post("/enroll/finish", body)
    assert again.status_code == 201, again.text
    second = again.json()
    assert _without_countdown(second) == _without_countdown(first)
    assert second["account_status"] == "new"  # as the first answer said, though the card is known now
    assert 0 < second["expires_in"] <= first["expires_in"] == 600
    credential_id = b64url_decode(body["credential"]["rawId"])
    assert _certificates_of(idp, credential_id) == 1
    with idp.services().db.transaction() as session:
        device = session.scalars(select(DeviceCertificate)
                                 .where(DeviceCertificate.credential_id == credential_id)).one()
        assert session.scalar(select(func.count()).select_from(JpkiBinding)
                              .where(JpkiBinding.account_id == device.account_id)) == 1
    answer = wallet.activate(body["enrollment_id"], second["activation"], authenticator, credential_id=credential_id)
    assert answer["status"] == "active"


def test_an_existing_account_stays_existing_on_a_retry(idp):
    card = idp.card()
    idp.wallet().enroll(card)
    wallet, _, _, _, body, first = _finished(idp, card)
    assert first["account_status"] == "existing"
    assert _without_countdown(wallet.post("/enroll/finish", body).json()) == _without_countdown(first)


def test_another_key_cannot_finish_a_finished_enrolment(idp):
    wallet, _, card, start, _, _ = _finished(idp)
    other = wallet.finish_body(start, card, wallet.new_authenticator())
    refused = wallet.post("/enroll/finish", other)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert _certificates_of(idp, b64url_decode(other["credential"]["rawId"])) == 0


def test_the_same_key_with_another_card_is_refused(idp):
    wallet, authenticator, _, start, body, _ = _finished(idp)
    stranger = idp.card()
    signature = stranger.sign(binding_message(start.challenge, authenticator.public_key_spki_der()))
    body = {**body, "jpki": {"certificate": base64.b64encode(stranger.certificate_der).decode(), "chain": [],
                             "signature": base64.b64encode(signature).decode()}}
    refused = wallet.post("/enroll/finish", body)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"


def test_a_retry_after_activation_is_refused(idp):
    wallet, authenticator, _, _, body, first = _finished(idp)
    wallet.activate(body["enrollment_id"], first["activation"], authenticator,
                    credential_id=b64url_decode(body["credential"]["rawId"]))
    refused = wallet.post("/enroll/finish", body)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"


def test_a_retry_after_the_activation_window_is_refused_as_expired(idp):
    wallet, _, _, _, body, _ = _finished(idp)
    with idp.services().db.transaction() as session:
        session.get(Enrollment, body["enrollment_id"]).activation_expires_at = utcnow() - timedelta(seconds=1)
    refused = wallet.post("/enroll/finish", body)
    assert refused.status_code == 400 and refused.json()["error"] == "expired"
