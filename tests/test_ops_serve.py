"""A real `idp serve` (gunicorn, two workers): readiness, metrics summed over the workers
(multiprocess mode), and a bounded graceful stop on SIGTERM that finishes the requests in
flight and serves no new one."""

from __future__ import annotations

import signal
import time

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from idp.ops.serving import GRACEFUL_TIMEOUT
from tests.support.crash import InFlight, database_held
from tests.support.lifecycle import card
from tests.support.server import serve_idp

STOP_ACCEPTING = 3.0  # s: a gthread worker leaves its accept loop within its 1 s poll (slack for load)


def healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "idp_request_duration_seconds_count" and sample.labels.get("endpoint") == "ops.healthz":
                return sample.value
    return 0.0


def test_serve_is_ready_sums_metrics_over_workers_and_stops_gracefully(tmp_path, jpki_ca):
    with serve_idp(tmp_path, jpki_ca, workers=2) as server:
        assert requests.get(server.url("/readyz"), timeout=10).status_code == 200
        before = healthz_count(requests.get(server.url("/metrics"), timeout=10).text)
        for _ in range(12):  # new connections: gunicorn spreads them over both workers
            assert requests.get(server.url("/healthz"), timeout=10, headers={"Connection": "close"}).ok
        after = healthz_count(requests.get(server.url("/metrics"), timeout=10).text)
        assert after - before == 12
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < GRACEFUL_TIMEOUT + 5
        assert "Traceback" not in server.log()


def _late_request(server) -> InFlight | None:
    """A request sent after SIGTERM: None when the connection is refused outright."""
    try:
        return InFlight.send(server, requests.Request("GET", server.url("/healthz")).prepare())
    except ConnectionRefusedError:
        return None


def test_sigterm_finishes_the_request_in_flight_and_serves_no_new_one(tmp_path, jpki_ca):
    """The request is held inside its transaction by a database lock while SIGTERM arrives:
    it still completes and commits; a request arriving after the signal is never served
    (gunicorn stops accepting: the connection is refused, or reset when the last worker
    closes the listening socket), so a balancer sends it elsewhere."""
    with serve_idp(tmp_path, jpki_ca, workers=2) as server:
        wallet = server.wallet()
        body = wallet.finish_body(wallet.begin(), card(server), wallet.new_authenticator())
        prepared = requests.Request("POST", server.url("/enroll/finish"), json=body).prepare()
        with database_held(server, "audit_log") as lock:
            flight = InFlight.send(server, prepared)
            lock.wait_blocked(flight)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(STOP_ACCEPTING)
            late = _late_request(server)
            assert not flight.done.is_set()
        assert flight.done.wait(GRACEFUL_TIMEOUT), "the request in flight never ended"
        assert isinstance(flight.outcome, tuple) and flight.outcome[0] == 201, flight.outcome
        assert server.process.wait(GRACEFUL_TIMEOUT + 5) == 0
        if late is not None:
            assert late.done.wait(10) and isinstance(late.outcome, OSError), late.outcome
        with server.engine().connect() as db:
            state = db.execute(text("SELECT state FROM enrollments WHERE id = :id"),
                               {"id": body["enrollment_id"]}).scalar_one()
        assert state == "finished"
        assert "Traceback" not in server.log()
