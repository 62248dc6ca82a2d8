"""A frozen dependency costs a request a bounded wait and a clear 503, never a stall
(issue 15: a frozen database path stalled every flow for 35 s; a frozen Redis added
5–25 s per request).

Frozen, not down: the database is held by a lock the requests wait for (PostgreSQL: a
table lock; SQLite: the write lock), Redis is a socket that accepts and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from idp.storage.db import SQLITE_BUSY_TIMEOUT_MS, STATEMENT_TIMEOUT_MS
from tests.conftest import start_idp
from tests.support.crash import database_held
from tests.support.server import parallel, serve_idp

SLACK = 5.0  # s: a busy 2-core machine
WORKERS = 2
REQUESTS = 4  # no more than one worker's threads: none queues behind another


@pytest.fixture
def frozen_redis() -> Iterator[str]:
    """redis://… of a listener that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()


def test_a_frozen_database_answers_503_within_its_timeout_and_recovers(tmp_path, jpki_ca):
    with serve_idp(tmp_path, jpki_ca, workers=WORKERS) as server:
        postgres = server.database_url.startswith("postgresql")
        bound = (STATEMENT_TIMEOUT_MS if postgres else SQLITE_BUSY_TIMEOUT_MS) / 1000 + SLACK
        begin = server.url("/enroll/begin")
        with database_held(server, "enrollments"):
            started = time.monotonic()
            answers = parallel(lambda i: requests.post(begin, json={}, timeout=60), REQUESTS)
            waited = time.monotonic() - started
            assert requests.get(server.url("/healthz"), timeout=5).status_code == 200  # alive, not stalled
        assert waited < bound, f"{waited:.1f} s"
        for answer in answers:
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0, answer.text
            assert answer.json()["error"] == "temporarily_unavailable"
        assert requests.post(begin, json={}, timeout=30).status_code == 200  # no restart needed
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        outage = [line for line in lines if line.get("logger") == "idp.outage"]
        assert 1 <= len(outage) <= WORKERS, outage  # one line per process and interval, not one per request
        assert "Traceback" not in server.log()


def test_a_frozen_redis_refuses_limited_endpoints_within_a_bounded_wait(tmp_path, jpki_ca, frozen_redis):
    generator = start_idp(tmp_path, jpki_ca, env={"IDP_RATE_LIMIT_PER_MINUTE": "60", "IDP_REDIS_URL": frozen_redis})
    server = next(generator)
    try:
        started = time.monotonic()
        refused = requests.post(server.base_url + "/enroll/begin", json={}, timeout=60)
        waited = time.monotonic() - started
        assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"
        assert waited < 3 + SLACK, f"{waited:.1f} s"
        started = time.monotonic()
        assert requests.get(server.base_url + "/.well-known/openid-configuration", timeout=10).status_code == 200
        assert time.monotonic() - started < 1.0  # endpoints without a limit never wait for Redis
    finally:
        generator.close()
