"""Clients kept per process at /authorize and /token (idp/clients/cache.py).

The cache saves a statement on each of the two endpoints, and must never be seen: a client
changed in the database (by another process, with no message to this one) is used as it is
now, for a refusal and for a success; each write that relies on a cached client checks its
revision in the same statement.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from flask import has_request_context, request
from sqlalchemy import event, select

from idp.clients.cache import ClientCache
from idp.storage.models import Client
from tests.support.lifecycle import db, login, rp
from tests.support.rp import RelyingParty, browser_login


@pytest.fixture
def client(idp):
    return rp(idp)


def change_client(idp, client_id: str, **metadata) -> int:
    """Edit a client as another process would (ORM: its revision moves on); the new revision."""
    with db(idp) as session:
        row = session.get(Client, client_id)
        if "disabled" in metadata:
            metadata.pop("disabled")
            row.disabled_at = row.created_at
        row.client_metadata = {**row.client_metadata, **metadata}
    with db(idp) as session:
        return session.scalar(select(Client.revision).where(Client.client_id == client_id))


@contextmanager
def statements_of(idp, path: str) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, sql, *args):
        if has_request_context() and request.path == path:
            seen.append(" ".join(sql.split())[:60])

    engine = idp.services().db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def authorize(client, **extra) -> requests.Response:
    url = client.authorization_url(**extra)[0]
    return requests.get(url, allow_redirects=False, timeout=10)


def test_every_change_moves_the_revision(idp, client):
    with db(idp) as session:
        before = session.get(Client, client.client_id).revision
    assert change_client(idp, client.client_id, client_name="Renamed") == before + 1


def test_a_warm_login_reads_no_client_at_authorize_or_token(idp, client, person):
    wallet, device = person
    login(idp, client, device)  # the cache is warm
    with statements_of(idp, "/authorize") as at_authorize, statements_of(idp, "/token") as at_token:
        login(idp, client, device)
    assert not any("FROM clients" in s and s.startswith("SELECT") for s in at_authorize), at_authorize
    assert len(at_authorize) == 1 and at_authorize[0].startswith("INSERT INTO authorization_transactions")
    assert len(at_token) == 2 and at_token[0].startswith("UPDATE authorization_transactions"), at_token


def test_a_redirect_uri_added_elsewhere_is_accepted_at_once(idp, client, person):
    wallet, device = person
    login(idp, client, device)
    added = f"http://127.0.0.1:9/added/{secrets.token_hex(3)}"
    change_client(idp, client.client_id, redirect_uris=[client.redirect_uri, added])
    answer = authorize(client, redirect_uri=added)
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login?txn="), answer.text


def test_a_redirect_uri_removed_elsewhere_is_refused_at_once(idp, client, person):
    wallet, device = person
    login(idp, client, device)
    change_client(idp, client.client_id, redirect_uris=["http://127.0.0.1:9/other"])
    answer = authorize(client)
    assert answer.status_code == 400 and "Location" not in answer.headers


def test_a_client_disabled_elsewhere_gets_no_token_for_its_last_code(idp, client, person):
    """The code was issued before the client was disabled; the token request comes after."""
    wallet, device = person
    login(idp, client, device)  # warm
    browser = requests.Session()
    location = client.start(browser)
    callback = browser_login(browser, idp.base_url, location, idp.wallet(browser), device)
    change_client(idp, client.client_id, disabled=True)
    with pytest.raises(Exception) as refused:
        client.finish(callback)
    assert "invalid_client" in str(refused.value)


def test_the_cache_is_bounded():
    cache = ClientCache(size=3)
    for number in range(5):
        cache.keep(type("Row", (), {name: f"c{number}" if name == "client_id" else 0
                                    for name in Client.__table__.c.keys()})())
    assert [cache.get(f"c{n}") is not None for n in range(5)] == [False, False, True, True, True]


def test_a_refresh_grant_reads_its_client_and_runs_once(idp, person):
    """Only the code grant takes a kept client (its spent code confirms it); a refresh grant
    reads its client and rotates its token once, never twice."""
    wallet, device = person
    refreshing = RelyingParty.register(idp.base_url, redirect_uri=f"http://127.0.0.1:9/cb/{secrets.token_hex(3)}",
                                       rp_category="municipal", grant_types=["authorization_code", "refresh_token"])
    browser = requests.Session()
    location = refreshing.start(browser, scope="openid profile offline_access", prompt="consent")
    tokens = refreshing.finish(browser_login(browser, idp.base_url, location, idp.wallet(browser), device))
    with statements_of(idp, "/token") as at_token:
        assert refreshing.refresh(tokens.refresh_token).access_token
    assert sum(s.startswith("SELECT clients") for s in at_token) == 1, at_token
    assert sum(s.startswith("INSERT INTO tokens") for s in at_token) == 1, at_token
