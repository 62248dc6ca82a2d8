"""Shared steps of the core-path tests (PROTOCOL.md §3 enrolment, §4 login) over real HTTP.

Small helpers so each test says only what it changes: a test card, an RP registered on a
loopback host, a login through ``/authorize`` → ``/login`` → ``/consent``, a direct
database edit (to move a deadline into the past), and the checks every refusal must pass
(a 4xx JSON ``{"error", "error_description"}``, never a 5xx).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from sqlalchemy import JSON, String, func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from idp.privacy import contains_individual_number
from idp.proofing.demo_card import TestCard, cached_key
from idp.storage.models import utcnow
from tests.support.rp import RelyingParty, TokenResult, browser_login
from tests.support.wallet import Enrolled, Wallet, WalletError

# Never contacted: the browser walk stops at the redirect URI (RFC 6749 §4.1.2).
RP_PORT = 9
SCOPES = {"municipal": "openid profile address", "transport": "openid profile address"}


def card(idp: Any, **overrides: Any) -> TestCard:
    """A new person's test card; the RSA key is reused because generating one is slow."""
    overrides.setdefault("key", cached_key("core-path-card"))
    return idp.card(**overrides)


def enrol(idp: Any, person: TestCard | None = None, *, wallet: Wallet | None = None, **kwargs: Any) -> Enrolled:
    """Steps 1–4 of PROTOCOL §3 for ``person`` (a new card by default)."""
    return (wallet or idp.wallet()).enroll(person or card(idp), **kwargs)


def redirect_uri(host: str = "127.0.0.1", port: int = RP_PORT, path: str = "/cb") -> str:
    return f"http://{host}:{port}{path}"


def register(idp: Any, category: str = "municipal", *, host: str = "127.0.0.1", port: int = RP_PORT,
             **metadata: Any) -> RelyingParty:
    """Dynamic registration of an RP whose redirect URI is on ``host`` (a loopback name)."""
    metadata.setdefault("scope", SCOPES.get(category, "openid profile"))
    return RelyingParty.register(idp.base_url, redirect_uri=redirect_uri(host, port), rp_category=category,
                                 **metadata)


def txn_of(location: str) -> str:
    """The transaction id of a ``/login?txn=`` (or ``/consent?txn=``) URL."""
    txn = dict(parse_qsl(urlsplit(location).query)).get("txn")
    assert txn, f"no txn in {location}"
    return txn


def start_login(rp: RelyingParty, browser: requests.Session, **extra: Any) -> str:
    """Send the browser to /authorize; it must land on /login; return the transaction id."""
    location = rp.start(browser, **extra)
    assert urlsplit(location).path == "/login", location
    return txn_of(location)


def callback(idp: Any, browser: requests.Session, rp: RelyingParty, device: Enrolled, *,
             wallet: Wallet | None = None, consent: str | None = "allow", same_device: bool = True,
             **extra: Any) -> str:
    """Authorization request → login → consent; return the (unfollowed) redirect to the RP."""
    location = rp.start(browser, **extra)
    return browser_login(browser, idp.base_url, location, wallet or idp.wallet(), device, consent=consent,
                         same_device=same_device, redirect_uri=rp.redirect_uri)


def login(idp: Any, browser: requests.Session, rp: RelyingParty, device: Enrolled, **kwargs: Any) -> TokenResult:
    """A whole login at ``rp``: the tokens, with the ID token validated by the independent RP code."""
    return rp.finish(callback(idp, browser, rp, device, **kwargs))


# errors ------------------------------------------------------------------------------
def error_of(failure: WalletError | requests.Response, *, status: int | None = None,
             error: str | None = None) -> dict:
    """Check a refusal is a 4xx JSON ``{"error", "error_description"}``; return the body."""
    if isinstance(failure, WalletError):
        code, body, response = failure.status, failure.body, failure.response
    else:
        response = failure
        code = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = response.text
    assert 400 <= code < 500, f"expected a 4xx, got {code}: {body!r}"
    if status is not None:
        assert code == status, f"expected {status}, got {code}: {body!r}"
    assert isinstance(body, dict), f"not a JSON object: {body!r}"
    assert response is None or response.headers.get("Content-Type", "").startswith("application/json")
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error_description"), str) and body["error_description"], body
    if error is not None:
        assert body["error"] == error, f"expected error {error!r}, got {body!r}"
    return body


# the database ------------------------------------------------------------------------------
@contextlib.contextmanager
def db(idp: Any) -> Iterator[Session]:
    """A transaction on the running IdP's own database (committed at the end)."""
    with idp.services().db.transaction() as session:
        yield session


def db_get(idp: Any, model: type, key: Any) -> Any:
    with db(idp) as session:
        row = session.get(model, key)
        assert row is not None, f"no {model.__name__} {key!r}"
        session.expunge(row)
        return row


def db_update(idp: Any, model: type, key: Any, **values: Any) -> None:
    with db(idp) as session:
        row = session.get(model, key)
        assert row is not None, f"no {model.__name__} {key!r}"
        for name, value in values.items():
            setattr(row, name, value)


def db_count(idp: Any, model: type, *where: Any) -> int:
    with db(idp) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def ago(seconds: int = 1) -> Any:
    return utcnow() - timedelta(seconds=seconds)


# privacy: the individual number ---------------------------------------------------------
def individual_numbers_in(engine: Engine) -> list[tuple[str, str, Any]]:
    """(table, column, value) of every text or JSON value shaped like an individual number."""
    found: list[tuple[str, str, Any]] = []
    inspector = inspect(engine)
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            columns = [c["name"] for c in inspector.get_columns(table) if isinstance(c["type"], (String, JSON))]
            if not columns:
                continue
            names = ", ".join(f'"{c}"' for c in columns)
            for row in connection.execute(text(f'SELECT {names} FROM "{table}"')):
                for column, value in zip(columns, row):
                    if contains_individual_number(value):
                        found.append((table, column, value))
    return found


def text_columns(engine: Engine) -> int:
    """How many text/JSON columns the scan covers (so a scan of nothing cannot pass)."""
    inspector = inspect(engine)
    return sum(
        isinstance(c["type"], (String, JSON)) for t in inspector.get_table_names() for c in inspector.get_columns(t)
    )
