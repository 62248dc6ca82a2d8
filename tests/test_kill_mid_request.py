"""``kill -9`` of the worker serving ``/enroll/finish``, ``/enroll/activate`` or ``/token``,
in the middle of its transaction, leaves no half-issued certificate and no orphan row, and
the same request then succeeds (issue 15).

A real ``idp serve --workers 2`` on SQLite or PostgreSQL; the test blocks the request
inside its transaction with a database lock, SIGKILLs the very worker holding the
request's connection (tests/support/crash.py), releases the lock and checks the tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import text

from idp.oidc.server import token_hash
from tests.support.crash import InFlight, SqliteLock, database_held, stop_inside_write, wait_for_workers
from tests.support.lifecycle import card, rp
from tests.support.rp import browser_login
from tests.support.server import ServedIdP, command_env, idp_command, serve_idp

WORKERS = 2
ATTEMPTS = 5

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
        SELECT t.id FROM tokens t LEFT JOIN authorization_transactions c ON c.code_hash = t.code_hash
        WHERE t.code_hash IS NOT NULL AND (c.code_hash IS NULL OR c.code_used_at IS NULL)""",
    "spent code without its tokens": """
        SELECT c.code_hash FROM authorization_transactions c
        WHERE c.code_used_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.code_hash = c.code_hash)""",
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


@dataclass
class Step:
    """One request to kill: what to send, whether its transaction committed, a retry."""

    request: requests.PreparedRequest
    committed: Callable[[], bool]
    retry: Callable[[], requests.Response]


def finish_step(server: ServedIdP) -> Step:
    wallet = server.wallet()
    body = wallet.finish_body(wallet.begin(), card(server), wallet.new_authenticator())
    return Step(_json(server, "/enroll/finish", body),
                lambda: _count(server, "SELECT count(*) FROM enrollments WHERE id = :id AND state = 'finished'",
                               id=body["enrollment_id"]) == 1,
                lambda: wallet.post("/enroll/finish", body))  # the phone retries the very same request


def activate_step(server: ServedIdP) -> Step:
    wallet = server.wallet()
    authenticator = wallet.new_authenticator()
    finished = wallet.finish(wallet.begin(), card(server), authenticator)
    credential = authenticator.get(dict(finished.activation_options), credential_id=finished.credential_id)
    body = {"enrollment_id": finished.enrollment_id, "credential": credential}
    return Step(_json(server, "/enroll/activate", body),
                lambda: _count(server, "SELECT count(*) FROM enrollments WHERE id = :id AND state = 'activated'",
                               id=finished.enrollment_id) == 1,
                lambda: wallet.post("/enroll/activate", body))  # the very same signed request


def token_step(server: ServedIdP) -> Step:
    device = server.wallet().enroll(card(server))
    client = rp(server)
    with requests.Session() as browser:
        request, params = client.parse_callback(
            browser_login(browser, server.base_url, client.start(browser), server.wallet(browser), device))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier}
    endpoint = client.provider["token_endpoint"]
    digest = token_hash(params["code"])
    return Step(requests.Request("POST", endpoint, data=form, auth=client.client_auth()).prepare(),
                lambda: _count(server, "SELECT count(*) FROM authorization_transactions WHERE code_hash = :h "
                                       "AND code_used_at IS NOT NULL", h=digest) == 1,
                lambda: requests.post(endpoint, data=form, auth=client.client_auth(), timeout=30))


STEPS = {"/enroll/finish": (finish_step, "audit_log"), "/enroll/activate": (activate_step, "audit_log"),
         "/token": (token_step, "tokens")}
RETRIED = {"/enroll/finish": (201, 201), "/enroll/activate": (200, 400), "/token": (200, 400)}
"""The retry's status when the killed request (rolled back, committed): a retried finish
gets the same answer either way; an activation or code exchange that committed is spent."""


@pytest.mark.parametrize("path", STEPS)
def test_kill_blocked_inside_the_transaction(server: ServedIdP, path: str) -> None:
    """PostgreSQL: killed after the request wrote (it waits on a table lock further on);
    SQLite: killed while it waits for the write lock, everything read and checked."""
    make, table = STEPS[path]
    step = make(server)
    kill_during(server, step.request, table=table)
    assert not step.committed()
    again = step.retry()
    assert again.status_code == RETRIED[path][0], again.text
    assert_no_orphans(server)


@pytest.mark.parametrize("path", STEPS)
def test_kill_inside_the_sqlite_write_transaction(server: ServedIdP, path: str) -> None:
    """SQLite: the worker is stopped while it holds the write lock (between its first write
    and the end of its commit), then killed. Whatever the instant, the request happened
    whole or not at all, and the retry answers accordingly."""
    if server.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: the kill above already lands after the request's first write")
    make, _ = STEPS[path]
    for _ in range(ATTEMPTS):
        step = make(server)
        lock = SqliteLock(server)
        try:
            flight = InFlight.send(server, step.request)
            lock.wait_blocked(flight)
            pid = stop_inside_write(server, flight, lock)
        finally:
            lock.release()
        if pid is not None:
            break
        assert flight.done.wait(30)  # it committed before it could be stopped: try again
    else:
        pytest.fail(f"the worker was never caught inside its write transaction in {ATTEMPTS} tries")
    os.kill(pid, signal.SIGKILL)
    assert flight.done.wait(10) and isinstance(flight.outcome, Exception), flight.outcome
    wait_for_workers(server, WORKERS)
    assert_no_orphans(server)
    committed = step.committed()
    again = step.retry()
    assert again.status_code == RETRIED[path][int(committed)], (committed, again.text)
    assert_no_orphans(server)
