"""A REAL ``idp serve`` (gunicorn, gthread workers) in a subprocess, for tests that need
what an in-process test server cannot give: several worker processes, several instances
on one database, parallel requests that really overlap, a clean stop and the server log.

    with serve_idp(tmp_path, jpki_ca) as server:          # SQLite file, or a fresh PostgreSQL
        statuses = parallel(lambda i: requests.post(server.url("/token"), ...), n=20)

Two instances of one deployment (same keys, same database):

    with serve_idp(tmp / "a", jpki_ca) as one, \\
         serve_idp(tmp / "b", jpki_ca, share=one) as two: ...

The database follows ``IDP_TEST_DATABASE_URL`` as tests/conftest.py does: unset, a
SQLite file under ``tmp``; set to a PostgreSQL server URL, a fresh database created on it
for this server (dropped when the last server using it stops).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from idp.proofing.demo_card import TestCard, TestJpkiCA
from idp.settings import Settings
from tests.support import log_scan
from tests.support.people import People

PG_URL = os.environ.get("IDP_TEST_DATABASE_URL")
START_TIMEOUT = 60.0  # seconds: two workers importing the app on a busy 2-core machine
STOP_TIMEOUT = 15.0
T = TypeVar("T")


def database_name() -> str:
    """A throw-away PostgreSQL database's name, in letters only: it shows up in outage log
    lines, where a run of twelve digits would read as an individual number (log_scan)."""
    return "idp_test_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


@contextlib.contextmanager
def fresh_database(tmp: Path) -> Iterator[str]:
    """A database URL nobody else uses: a SQLite file under ``tmp``, or a new PostgreSQL
    database on ``IDP_TEST_DATABASE_URL``'s server (dropped on exit)."""
    if not PG_URL:
        tmp.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{tmp / 'idp.sqlite3'}"
        return
    import psycopg

    name = database_name()
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (gunicorn binds it by number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServedIdP(People):
    """A running ``idp serve`` subprocess: its URL, environment, log and test JPKI CA.

    Offers the same helpers as the in-process ``RunningIdP`` of tests/conftest.py
    (``card``, ``wallet``, ``authenticator``), so flow helpers work against either.
    """

    base_url: str
    port: int
    env: dict[str, str]
    settings: Settings
    jpki_ca: TestJpkiCA
    log_path: Path
    process: subprocess.Popen[bytes]
    issued_cards: list[TestCard] = field(default_factory=list)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def database_url(self) -> str:
        return self.env["IDP_DATABASE_URL"]

    @property
    def keys_dir(self) -> Path:
        return Path(self.env["IDP_KEYS_DIR"])

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def engine(self) -> Engine:
        """A SQLAlchemy engine on the server's database, for checks and deadline edits."""
        if self._engine is None:
            self._engine = create_engine(self.database_url)
        return self._engine

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """Stop gracefully (SIGTERM to gunicorn's arbiter), kill after a deadline; exit code."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        return self.process.returncode


def idp_command(*args: str) -> list[str]:
    """The ``idp`` command line run with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "idp.cli", *args]


def command_env(env: Mapping[str, str]) -> dict[str, str]:
    """The process environment for an ``idp`` subprocess: none of the caller's ``IDP_*``
    variables leak in; only ``env`` configures the deployment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


def start_server(env: Mapping[str, str], *, port: int, log_path: Path, workers: int = 2,
                 jpki_ca: TestJpkiCA, args: tuple[str, ...] = ()) -> ServedIdP:
    """Start ``idp serve`` with exactly ``env`` as its deployment and wait until it answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_scan.watch(log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            idp_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *args),
            env=command_env(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a kill reaches the workers too
        )
    settings = Settings.from_env(dict(env), testing=True)
    server = ServedIdP(base_url=f"http://127.0.0.1:{port}", port=port, env=dict(env), settings=settings,
                       jpki_ca=jpki_ca, log_path=log_path, process=process)
    try:
        wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: ServedIdP, timeout: float = START_TIMEOUT) -> None:
    """Poll the discovery document until every worker could answer, or fail with the log."""
    deadline = time.monotonic() + timeout
    probe = server.url("/.well-known/openid-configuration")
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"idp serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(probe, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"idp serve not ready after {timeout:.0f} s:\n{server.log()}")


@contextlib.contextmanager
def serve_idp(tmp: Path, jpki_ca: TestJpkiCA, *, workers: int = 2, env: Mapping[str, Any] | None = None,
              share: ServedIdP | None = None, issuer: str | None = None) -> Iterator[ServedIdP]:
    """A real ``idp serve --workers N`` on a free loopback port, stopped on exit.

    ``tmp`` holds this instance's log (and, unless shared, its keys, anchors and SQLite
    file). ``share=other`` makes a second instance of the same deployment: the other's
    keys folder, trust anchors and database. ``issuer`` defaults to this instance's own
    ``http://127.0.0.1:PORT``; give one issuer to instances behind one front door.
    ``env`` adds or overrides ``IDP_*`` variables (a ``None`` value removes one).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with contextlib.ExitStack() as stack:
        if share is not None:
            base = {k: v for k, v in share.env.items()
                    if k in ("IDP_KEYS_DIR", "IDP_DATABASE_URL", "IDP_JPKI_TRUST_ANCHORS", "IDP_INSTANCE_DIR",
                             "IDP_RATE_LIMIT_PER_MINUTE", "IDP_ALLOW_SYNCED_KEYS", "IDP_SECRET_KEY",
                             "IDP_KEYS_REFRESH_SECONDS")}
        else:
            anchors = tmp / "jpki"
            anchors.mkdir(parents=True, exist_ok=True)
            (anchors / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
            base = {
                "IDP_KEYS_DIR": str(tmp / "keys"),
                "IDP_INSTANCE_DIR": str(tmp / "instance"),
                "IDP_DATABASE_URL": stack.enter_context(fresh_database(tmp / "db")),
                "IDP_JPKI_TRUST_ANCHORS": str(anchors),
                "IDP_RATE_LIMIT_PER_MINUTE": "0",
                "IDP_ALLOW_SYNCED_KEYS": "0",
                "IDP_KEYS_REFRESH_SECONDS": "1",  # a rotation shows within a second
            }
        full = {**base, "IDP_ISSUER": issuer or f"http://127.0.0.1:{port}"}
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = str(value)
        server = start_server(full, port=port, log_path=tmp / f"serve-{port}.log", workers=workers,
                              jpki_ca=jpki_ca)
        try:
            yield server
        finally:
            server.stop()


def parallel(send: Callable[[int], T], n: int = 20, *, timeout: float = 60.0) -> list[T]:
    """Run ``send(i)`` for i in 0..n-1 on n threads released together; results in order.

    A barrier holds every thread until all are ready, so the requests really overlap at
    the server. An exception in any ``send`` is re-raised here.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = send(i)
        except BaseException as exc:  # handed back to the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"parallel requests still running after {timeout} s")
    return results


def statuses(responses: list[requests.Response]) -> list[int]:
    """The HTTP status of each response, sorted (for readable assertion messages)."""
    return sorted(response.status_code for response in responses)
