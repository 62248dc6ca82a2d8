"""`idp prune` deletes only what is past its expiry plus a day, and keeps everything live."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from idp.storage.models import AuthorizationTransaction, Consent, DeviceCertificate, Enrollment, utcnow
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import run_cli
from tests.support.rp import RelyingParty


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("prune-idp"), jpki_ca)


def _count(server: RunningIdP, model) -> int:  # type: ignore[no-untyped-def]
    with server.services().db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_prune_removes_only_long_expired_rows(server, browser, monkeypatch):
    server.wallet().enroll(server.card())
    rp = RelyingParty.register(server.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="medical")
    rp.start(browser)
    rp.start(browser)
    with server.services().db.transaction() as session:
        old = session.scalars(select(AuthorizationTransaction.id)).first()
        session.execute(update(AuthorizationTransaction).where(AuthorizationTransaction.id == old)
                        .values(expires_at=utcnow() - timedelta(days=2)))
    before = _count(server, AuthorizationTransaction)
    result = run_cli(server, monkeypatch, "prune")
    assert result.code == 0 and "authorization_transactions 1" in result.out
    assert _count(server, AuthorizationTransaction) == before - 1
    assert _count(server, Enrollment) == 1  # activated moments ago: kept
    assert _count(server, DeviceCertificate) == 1
    assert _count(server, Consent) == 0


def test_prune_deletes_disclosures_after_the_stated_retention(server, monkeypatch):
    from idp.storage.models import Account, Client, Disclosure
    from idp.storage.prune import DISCLOSURE_RETENTION

    with server.services().db.transaction() as session:
        account = session.scalars(select(Account.id)).first()
        client = session.scalars(select(Client.client_id)).first()
        for age in (DISCLOSURE_RETENTION + timedelta(days=1), DISCLOSURE_RETENTION - timedelta(days=1)):
            session.add(Disclosure(account_id=account, client_id=client, claims=["name"], channel="id_token",
                                   at=utcnow() - age))
    before = _count(server, Disclosure)
    result = run_cli(server, monkeypatch, "prune")
    assert result.code == 0 and "disclosures 1" in result.out
    assert _count(server, Disclosure) == before - 1
