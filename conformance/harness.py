"""Start an IdP to test: a fresh deployment in a temporary folder, trusting a new TEST JPKI CA.

``inprocess`` serves ``idp.create_app`` from a werkzeug thread (fast; what CI uses);
``gunicorn`` runs ``idp serve`` in a subprocess, as a deployment does. Either way the
runner only ever talks HTTP to it; the harness also knows how to run the operator's
``idp keys rotate`` against the same keys folder for oidcc-server-rotate-keys.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.serialization import Encoding

from idp.proofing.demo_card import TestJpkiCA


@dataclass
class Deployment:
    issuer: str
    env: dict[str, str]
    jpki_ca: TestJpkiCA
    stop: Callable[[], None]

    def rotate_keys(self, grace: int) -> None:
        """The operator's command (PROTOCOL §6): publish new keys now, sign with them after ``grace``."""
        result = subprocess.run([sys.executable, "-m", "idp.cli", "keys", "rotate", "--grace", str(grace)],
                                env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"idp keys rotate failed: {result.stderr.strip()}")


    def age_codes(self, seconds: int) -> None:
        """The clock moving on for codes: every authorization code expires ``seconds`` earlier
        (the expired-code module need not sleep through a code's lifetime)."""
        from datetime import timedelta

        from sqlalchemy import create_engine, select
        from sqlalchemy.orm import Session

        from idp.storage.models import AuthorizationTransaction

        engine = create_engine(self.env["IDP_DATABASE_URL"])
        try:
            with Session(engine) as session, session.begin():
                codes = select(AuthorizationTransaction).where(AuthorizationTransaction.code_hash.is_not(None))
                for txn in session.scalars(codes):  # a code is kept on the transaction it ended
                    txn.code_expires_at = txn.code_expires_at - timedelta(seconds=seconds)
        finally:
            engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(folder: Path, issuer: str, jpki_ca: TestJpkiCA) -> dict[str, str]:
    anchors = folder / "jpki"
    anchors.mkdir(parents=True, exist_ok=True)
    (anchors / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
    return {
        "IDP_ISSUER": issuer,
        "IDP_KEYS_DIR": str(folder / "keys"),
        "IDP_INSTANCE_DIR": str(folder / "instance"),
        "IDP_DATABASE_URL": os.environ.get("CONFORMANCE_DATABASE_URL", f"sqlite:///{folder / 'idp.sqlite3'}"),
        "IDP_JPKI_TRUST_ANCHORS": str(anchors),
        "IDP_RATE_LIMIT_PER_MINUTE": "0",
        "IDP_ALLOW_SYNCED_KEYS": "0",
        "IDP_ALLOW_HTTP_LOOPBACK": "1",
        "IDP_KEYS_REFRESH_SECONDS": "1",  # oidcc-server-rotate-keys looks for the new key 2.5 s after rotating
    }


def start(kind: str = "inprocess", folder: Path | None = None) -> Deployment:
    folder = folder or Path(tempfile.mkdtemp(prefix="idp-conformance-"))
    jpki_ca = TestJpkiCA.create()
    if kind == "gunicorn":
        return _start_gunicorn(folder, jpki_ca)
    return _start_inprocess(folder, jpki_ca)


class _LateApp:
    """The server needs its port before the app (whose issuer is that URL) exists."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


def _start_inprocess(folder: Path, jpki_ca: TestJpkiCA) -> Deployment:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request would bury the table

    from idp import create_app
    from idp.context import initialise
    from idp.settings import Settings

    late = _LateApp()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    issuer = f"http://127.0.0.1:{server.server_port}"
    env = _environment(folder, issuer, jpki_ca)
    settings = Settings.from_env(env)
    initialise(settings)
    late.app = create_app(settings)
    thread = threading.Thread(target=server.serve_forever, name="idp-under-test", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        late.app.extensions["idp"].db.dispose()

    return Deployment(issuer, env, jpki_ca, stop)


def _start_gunicorn(folder: Path, jpki_ca: TestJpkiCA) -> Deployment:
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = _environment(folder, issuer, jpki_ca)
    full_env = {**os.environ, **env}
    subprocess.run([sys.executable, "-m", "idp.cli", "init"], env=full_env, check=True, capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "2"], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"idp serve did not start: {process.stderr.read().decode() if process.stderr else ''}")
        time.sleep(0.2)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    return Deployment(issuer, env, jpki_ca, stop)
