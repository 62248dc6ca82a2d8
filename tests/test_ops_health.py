"""Liveness, readiness and the database lifecycle (README "Operations"): /readyz follows the
database and the schema and recovers without a restart; `idp db upgrade` is safe from several
instances at once; `idp init` prints only what it created."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from idp.proofing.demo_card import TestJpkiCA
from tests.conftest import PG_URL, RunningIdP, start_idp
from tests.support.server import fresh_database as new_database


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("health-idp"), jpki_ca)


def ready(server: RunningIdP) -> requests.Response:
    return requests.get(server.base_url + "/readyz", timeout=30)


def test_healthz_answers_while_serving(server):
    response = requests.get(server.base_url + "/healthz", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_200_when_database_schema_and_keys_are_there(server):
    response = ready(server)
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_readyz_is_503_while_the_schema_is_behind_and_recovers(server):
    engine = server.services().db.engine
    with engine.begin() as connection:
        head = connection.scalar(text("SELECT version_num FROM alembic_version"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    try:
        response = ready(server)
        assert response.status_code == 503 and response.headers["Retry-After"]
        body = response.json()
        assert body["error"] == "temporarily_unavailable" and "idp db upgrade" in body["error_description"]
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert ready(server).status_code == 200


def test_readyz_is_503_while_the_scheduled_signing_key_is_out_of_reach(server):
    """The schedule names a key for now whose sealed private half this instance cannot open
    (as if it were sealed for another deployment's keys folder): not ready, no signature,
    and ready again once the schedule is repaired."""
    import time as clock

    from sqlalchemy import delete, update

    from idp.storage.models import SigningKey, SigningKeySchedule

    keystore = server.services().keystore
    public = {**keystore.public_jwks()["keys"][0]}

    def change(work):  # type: ignore[no-untyped-def]
        with server.services().db.transaction() as session:
            work(session)
            session.execute(update(SigningKeySchedule).values(version=SigningKeySchedule.version + 1))
        keystore._checked = float("-inf")  # as after the keystore's re-read interval

    now = int(clock.time())
    change(lambda session: session.add(SigningKey(
        kid="out-of-reach", alg=public["alg"], created_at=now, use_after=now,
        public_jwk={**public, "kid": "out-of-reach"}, sealed="not.a.sealed.key.")))
    try:
        response = ready(server)  # whether or not it is the key to sign with yet (a tie in use_after)
        assert response.status_code == 503 and "signing key" in response.json()["error_description"]
    finally:
        change(lambda session: session.execute(delete(SigningKey).where(SigningKey.kid == "out-of-reach")))
    assert ready(server).status_code == 200


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: SQLite's file cannot be made unreachable to "
                                       "an open connection")
def test_readyz_is_503_while_the_database_refuses_connections_and_recovers(tmp_path, jpki_ca, caplog):
    """Also: requests that need the database answer 503 with Retry-After, logged once."""
    import psycopg

    from idp.ops import outage

    servers = start_idp(tmp_path, jpki_ca)
    server = next(servers)
    name = server.settings.database_url.rsplit("/", 1)[1]
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        assert ready(server).status_code == 200
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        response = ready(server)
        assert response.status_code == 503
        assert response.json() == {"error": "temporarily_unavailable",
                                   "error_description": "the database is unreachable"}
        outage.reporter._last.clear()
        caplog.clear()
        for _ in range(5):
            refused = requests.post(server.base_url + "/enroll/begin", json={}, timeout=30)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            assert refused.json()["error"] == "temporarily_unavailable"
        reports = [r for r in caplog.records if r.name == "idp.outage"]
        assert len(reports) == 1 and reports[0].exc_info is None  # one line, no traceback
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert ready(server).status_code == 200  # the same process, no restart
    finally:
        servers.close()


# --- the database lifecycle ------------------------------------------------------------------


def _env(tmp: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_KEYS_DIR=str(tmp / "keys"), IDP_INSTANCE_DIR=str(tmp / "instance"),
               IDP_DATABASE_URL=database_url, IDP_ISSUER="http://127.0.0.1:8000")
    return env


@pytest.fixture
def fresh_database(tmp_path: Path) -> Iterator[str]:
    with new_database(tmp_path / "fresh") as url:
        yield url


def idp_command(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "idp.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_db_upgrade_from_several_instances_at_once_on_a_fresh_database(tmp_path, fresh_database):
    env = _env(tmp_path, fresh_database)
    started = time.monotonic()
    runs = [idp_command(env, "db", "upgrade") for _ in range(4)]
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    assert all(code == 0 for code, _, _ in results), results
    outs = sorted(out.strip() for _, out, _ in results)
    assert outs.count("database schema migrated to the newest revision") == 1, outs
    assert outs.count("database schema already current") == 3, outs
    assert time.monotonic() - started < 120


def test_init_prints_what_it_created_and_nothing_on_a_rerun(tmp_path, fresh_database):
    env = _env(tmp_path, fresh_database)
    first = subprocess.run([sys.executable, "-m", "idp.cli", "init"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert all(line.startswith("created: ") for line in lines) and len(lines) >= 5
    assert any("database schema" in line for line in lines)
    again = subprocess.run([sys.executable, "-m", "idp.cli", "init"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and again.stdout == "", again


def test_a_serving_process_never_imports_alembic(tmp_path):
    """`idp serve` migrates in a forked child: alembic (about 11 MiB) stays out of the master
    and so of every worker forked from it, and /readyz compares revisions without it."""
    script = """
import sys
from idp import create_app
from idp.cli import _initialise_apart
from idp.settings import Settings

settings = Settings.from_env()
_initialise_apart(settings)
app = create_app(settings)
answer = app.test_client().get("/readyz")
assert answer.status_code == 200, answer.get_data(as_text=True)
assert "alembic" not in sys.modules, sorted(m for m in sys.modules if m.startswith("alembic"))
print("lean")
"""
    env = {**os.environ, "IDP_ISSUER": "http://localhost:8000", "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "IDP_INSTANCE_DIR": str(tmp_path / "instance"), "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "lean", done.stderr[-2000:]


def test_serve_reports_a_failed_initialisation_in_one_line(tmp_path):
    """The initialising child's refusal reaches the operator as `idp serve`'s own one line."""
    env = {**os.environ, "IDP_ISSUER": "http://localhost:8000", "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
           "IDP_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"}
    done = subprocess.run([sys.executable, "-m", "idp.cli", "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idp: OperationalError"), done.stderr[-2000:]
