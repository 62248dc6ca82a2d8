"""Shared set-up for the examples' tests: the project's own test IdP, an enrolled person
with a software authenticator (tests/support), and a loopback server for each example RP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import RunningIdP, idp, jpki_ca, person  # noqa: F401  (fixtures shared with tests/)
from tests.support.lifecycle import run_cli
from tests.support.rp import browser_login
from tests.support.wallet import Enrolled, Wallet


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on an ephemeral loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def mint_token(idp: RunningIdP, category: str) -> str:
    """``idp clients token --category C`` as the operator runs it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = run_cli(idp, monkeypatch, "clients", "token", "--category", category)
    assert result.code == 0, result
    return result.out.strip()


def operator_cli(idp: RunningIdP, *argv: str) -> str:
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = run_cli(idp, monkeypatch, *argv)
    assert result.code == 0, result
    return result.out


def sign_in(idp: RunningIdP, person: tuple[Wallet, Enrolled], start_url: str,
            browser: requests.Session | None = None) -> requests.Response:
    """The person opens the RP's sign-in link, approves with their phone (the software
    authenticator) and consents; returns the RP's page after its callback."""
    wallet, device = person
    browser = browser or requests.Session()
    first = browser.get(start_url, allow_redirects=False, timeout=10)
    assert first.status_code in (302, 303), first.text
    callback = browser_login(browser, idp.base_url, first.headers["Location"], wallet.with_session(browser), device)
    return browser.get(callback, timeout=30)
