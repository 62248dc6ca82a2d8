"""Test set-up: a real IdP over real HTTP on loopback, with a test JPKI CA made here.

Each xdist worker gets its own database: a SQLite file, or, when
``IDP_TEST_DATABASE_URL`` names a PostgreSQL server, a fresh database created on it
(dropped at the end). Servers run in a thread on 127.0.0.1 with an ephemeral port; the
issuer is that URL, so WebAuthn origins and RP IDs are the real ones.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from werkzeug.serving import make_server

from idp import create_app
from idp.context import initialise
from idp.proofing.demo_card import TestCard, TestJpkiCA
from idp.settings import Settings
from tests.support import log_scan
from tests.support.balancer import Deployment, two_instances
from tests.support.people import People
from tests.support.rp_host import RpHost
from tests.support.server import ServedIdP, database_name, serve_idp
from tests.support.wallet import Enrolled, Wallet

PG_URL = os.environ.get("IDP_TEST_DATABASE_URL")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines in test output


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: needs the embedded SQLite database")
    log_scan.register(config)  # no token or personal value in any server log of the run


def _database_url(tmp: Path) -> tuple[str, Any]:
    if not PG_URL:
        return f"sqlite:///{tmp / 'idp.sqlite3'}", None
    import psycopg

    name = database_name()
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return PG_URL.rsplit("/", 1)[0] + f"/{name}", drop


@dataclass
class RunningIdP(People):
    """A live IdP: its base URL, app, settings and the test JPKI CA it trusts."""

    base_url: str
    app: Flask
    settings: Settings
    jpki_ca: TestJpkiCA
    issued_cards: list[TestCard] = field(default_factory=list)

    def services(self):  # type: ignore[no-untyped-def]
        return self.app.extensions["idp"]


class _LateApp:
    """The server needs a port before the app (whose issuer is that URL) exists."""

    app: Flask | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def jpki_ca() -> TestJpkiCA:
    return TestJpkiCA.create()


def start_idp(tmp: Path, jpki_ca: TestJpkiCA, *, host: str = "127.0.0.1", **overrides: Any) -> Iterator[RunningIdP]:
    """Serve an IdP on loopback; ``host`` names it in the issuer (a real browser needs a
    domain such as ``localhost`` as WebAuthn RP ID, never an IP address)."""
    late = _LateApp()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    base_url = f"http://{host}:{server.server_port}"
    anchors = tmp / "jpki"
    anchors.mkdir(parents=True, exist_ok=True)
    (anchors / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
    database_url, drop = _database_url(tmp)
    env = {
        "IDP_ISSUER": base_url,
        "IDP_KEYS_DIR": str(tmp / "keys"),
        "IDP_INSTANCE_DIR": str(tmp / "instance"),
        "IDP_DATABASE_URL": database_url,
        "IDP_JPKI_TRUST_ANCHORS": str(anchors),
        "IDP_RATE_LIMIT_PER_MINUTE": "0",
        "IDP_ALLOW_SYNCED_KEYS": "0",
        "IDP_KEYS_REFRESH_SECONDS": "1",  # a rotation shows within a second
    }
    env.update({k: str(v) for k, v in overrides.pop("env", {}).items()})
    settings = Settings.from_env(env, testing=True, **overrides)
    initialise(settings)
    app = create_app(settings)
    late.app = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningIdP(base_url=base_url, app=app, settings=settings, jpki_ca=jpki_ca)
    finally:
        server.shutdown()
        app.extensions["idp"].db.dispose()
        if drop:
            drop()


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("idp"), jpki_ca)


@pytest.fixture(scope="module")
def served_idp(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[ServedIdP]:
    """A real ``idp serve --workers 2`` subprocess (gunicorn) for parallel-request tests."""
    with serve_idp(tmp_path_factory.mktemp("served"), jpki_ca) as server:
        yield server


@pytest.fixture(scope="module", params=["one-instance", "two-instances"])
def spread_deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                      jpki_ca: TestJpkiCA) -> Iterator[ServedIdP | Deployment]:
    """Each test of the module twice: on one ``idp serve``, and with its requests (parallel
    ones included) spread by a round-robin balancer over two instances of one deployment."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "one-instance":
        with serve_idp(tmp, jpki_ca) as server:
            yield server
    else:
        with two_instances(tmp, jpki_ca) as running:
            yield running


@pytest.fixture
def spread_idp(spread_deployment: ServedIdP | Deployment) -> Iterator[ServedIdP]:
    """The server a test of :func:`spread_deployment` talks to; behind the balancer, the
    test's requests must have reached both instances."""
    if isinstance(spread_deployment, ServedIdP):
        yield spread_deployment
        return
    mark = len(spread_deployment.balancer.paths)
    yield spread_deployment.front
    assert spread_deployment.served_by(mark) == {instance.port for instance in spread_deployment.instances}


@pytest.fixture(scope="module")
def host() -> Iterator[RpHost]:
    """A loopback web server for an RP's documents (sector identifier, jwks, logout URIs)."""
    with RpHost() as running:
        yield running


@pytest.fixture(scope="module")
def person(idp: RunningIdP) -> tuple[Wallet, Enrolled]:
    """One enrolled, activated person (their wallet and device) per test module."""
    wallet = idp.wallet()
    return wallet, wallet.enroll(idp.card())


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
