"""``kill -9`` of the worker serving ``/enroll/finish``, ``/enroll/activate`` or ``/token``,
in the middle of its transaction, leaves no half-issued certificate and no orphan row, and
the same request then succeeds (issue 15).

A real ``idp serve --workers 2`` on SQLite or PostgreSQL; the test blocks the request
inside its transaction with a database lock, SIGKILLs the very worker holding the
request's connection (tests/support/crash.py), releases the lock and checks the tables.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import text

from tests.support.crash import InFlight, database_held, wait_for_workers
from tests.support.lifecycle import card, rp
from tests.support.rp import browser_login
from tests.support.server import ServedIdP, command_env, idp_command, serve_idp
from tests.support.wallet import b64url_decode

WORKERS = 2

# Each query lists rows that break a promise; every list must stay empty.
ORPHANS = {
    "certificate without a finished enrolment": """
        SELECT d.serial FROM device_certificates d WHERE NOT EXISTS (
            SELECT 1 FROM enrollments e WHERE e.device_serial = d.serial AND e.state IN ('finished', 'activated'))""",
    "finished enrolment without its certificate or activation challenge": """
        SELECT e.id FROM enrollments e LEFT JOIN device_certificates d ON d.serial = e.device_serial
        WHERE e.state IN ('finished', 'activated')
          AND (d.serial IS NULL OR e.activation_challenge IS NULL OR e.proof_route IS NULL)""",
    "activated enrolment with a pending certificate": """
        SELECT e.id FROM enrollments e JOIN device_certificates d ON d.serial = e.device_serial
        WHERE e.state = 'activated' AND (d.state = 'pending' OR d.activated_at IS NULL)""",
    "active certificate whose enrolment was never activated": """
        SELECT d.serial FROM device_certificates d JOIN enrollments e ON e.device_serial = d.serial
        WHERE d.state = 'active' AND e.state <> 'activated'""",
    "account without a card binding or a device": """
        SELECT a.id FROM accounts a
        WHERE NOT EXISTS (SELECT 1 FROM jpki_bindings b WHERE b.account_id = a.id)
           OR NOT EXISTS (SELECT 1 FROM device_certificates d WHERE d.account_id = a.id)""",
    "card binding without its account's device": """
        SELECT b.id FROM jpki_bindings b
        WHERE NOT EXISTS (SELECT 1 FROM device_certificates d WHERE d.jpki_binding_id = b.id)""",
    "token whose code is not spent": """
        SELECT t.id FROM tokens t LEFT JOIN authorization_codes c ON c.code_hash = t.code_hash
        WHERE t.code_hash IS NOT NULL AND (c.code_hash IS NULL OR c.used_at IS NULL)""",
    "spent code without its tokens": """
        SELECT c.code_hash FROM authorization_codes c
        WHERE c.used_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.code_hash = c.code_hash)""",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca) -> Iterator[ServedIdP]:
    with serve_idp(tmp_path_factory.mktemp("kill"), jpki_ca, workers=WORKERS) as running:
        yield running


def assert_no_orphans(server: ServedIdP) -> None:
    with server.engine().connect() as db:
        found = {name: db.execute(text(query)).scalars().all() for name, query in ORPHANS.items()}
    assert not {name: rows for name, rows in found.items() if rows}
    verify = subprocess.run(idp_command("audit", "verify"), env=command_env(server.env), capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def kill_during(server: ServedIdP, prepared: requests.PreparedRequest, *, table: str) -> None:
    """Send ``prepared``, block it inside its transaction at ``table``, SIGKILL its worker."""
    with database_held(server, table) as lock:
        flight = InFlight.send(server, prepared)
        lock.wait_blocked(flight)
        flight.kill_handler()
    lock.wait_gone()
    wait_for_workers(server, WORKERS)
    assert_no_orphans(server)


def _json(server: ServedIdP, path: str, body: dict[str, Any]) -> requests.PreparedRequest:
    return requests.Request("POST", server.url(path), json=body, headers={"Accept": "application/json"}).prepare()


def _count(server: ServedIdP, query: str, **params: Any) -> int:
    with server.engine().connect() as db:
        return db.execute(text(query), params).scalar_one()


def test_kill_during_enrolment_finish(server: ServedIdP) -> None:
    wallet = server.wallet()
    authenticator = wallet.new_authenticator()
    body = wallet.finish_body(wallet.begin(), card(server), authenticator)
    kill_during(server, _json(server, "/enroll/finish", body), table="audit_log")
    assert _count(server, "SELECT count(*) FROM enrollments WHERE id = :id AND state = 'begun'",
                  id=body["enrollment_id"]) == 1
    again = wallet.post("/enroll/finish", body)  # the phone retries: nothing of the killed try is in the way
    assert again.status_code == 201, again.text
    credential_id = b64url_decode(body["credential"]["rawId"])
    wallet.activate(body["enrollment_id"], again.json()["activation"], authenticator, credential_id=credential_id)
    assert_no_orphans(server)


def test_kill_during_activation(server: ServedIdP) -> None:
    wallet = server.wallet()
    authenticator = wallet.new_authenticator()
    finished = wallet.finish(wallet.begin(), card(server), authenticator)
    credential = authenticator.get(dict(finished.activation_options), credential_id=finished.credential_id)
    body = {"enrollment_id": finished.enrollment_id, "credential": credential}
    kill_during(server, _json(server, "/enroll/activate", body), table="audit_log")
    assert _count(server, "SELECT count(*) FROM device_certificates d JOIN enrollments e ON e.device_serial = "
                          "d.serial WHERE e.id = :id AND e.state = 'finished' AND d.state = 'pending'",
                  id=finished.enrollment_id) == 1
    answer = wallet.call("/enroll/activate", body)  # the very same signed request, retried
    assert answer["status"] == "active"
    assert_no_orphans(server)


def test_kill_during_code_exchange(server: ServedIdP) -> None:
    wallet = server.wallet()
    device = wallet.enroll(card(server))
    client = rp(server)
    with requests.Session() as browser:
        request, params = client.parse_callback(
            browser_login(browser, server.base_url, client.start(browser), server.wallet(browser), device))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier}
    token_endpoint = client.provider["token_endpoint"]
    prepared = requests.Request("POST", token_endpoint, data=form, auth=client.client_auth()).prepare()
    kill_during(server, prepared, table="tokens")
    assert _count(server, "SELECT count(*) FROM authorization_codes WHERE used_at IS NOT NULL") == 0
    assert _count(server, "SELECT count(*) FROM tokens") == 0
    again = requests.post(token_endpoint, data=form, auth=client.client_auth(), timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["access_token"] and again.json()["id_token"]
    assert_no_orphans(server)
