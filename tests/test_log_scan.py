"""The end-of-session log scan (tests/support/log_scan.py) really fails a run whose server
logs hold a token, a card's personal value or a 12-digit number, with or without xdist,
and names what leaked without printing it again."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from tests.support import log_scan
from tests.support.lifecycle import card, login, rp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "planted-access-token-4f1c9a"

INNER_CONFTEST = """
from tests.support import log_scan


def pytest_configure(config):
    log_scan.register(config)
"""

# A fake token endpoint, a test card, and a "server" that logs what it should not.
INNER_TESTS = """
import logging
import threading

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from idp.proofing.demo_card import TestJpkiCA
from tests.support import log_scan

LEAK = "@LEAK@"


def _issue(environ, start_response):
    return Response('{"access_token": "@TOKEN@", "token_type": "Bearer"}',
                    content_type="application/json")(environ, start_response)


def test_token(tmp_path):
    server = make_server("127.0.0.1", 0, _issue)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = requests.post(f"http://127.0.0.1:{server.server_port}/token", timeout=10).json()["access_token"]
    server.shutdown()
    if LEAK == "token":
        logging.getLogger("idp.oidc.server").warning("issued %s", token)


def test_card_and_number(tmp_path):
    TestJpkiCA.create().issue_card(name="漏洩　試験", address="東京都千代田区試験町一丁目")
    served = tmp_path / "serve.log"
    log_scan.watch(served)
    lines = ['{"message": "GET /login 200"}']
    if LEAK == "card":
        lines.append('{"message": "proved 漏洩　試験"}')
    if LEAK == "number":
        lines.append('{"message": "form field 123456789018"}')
    served.write_text("\\n".join(lines) + "\\n", encoding="utf-8")
"""


def _inner_run(tmp_path: Path, leak: str, *extra: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / f"inner-{leak}"
    suite.mkdir()
    (suite / "conftest.py").write_text(INNER_CONFTEST)
    (suite / "test_inner.py").write_text(INNER_TESTS.replace("@LEAK@", leak).replace("@TOKEN@", TOKEN))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(suite),
                           "--basetemp", str(tmp_path / f"basetemp-{leak}"), *extra, str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("leak, kind", [("token", "access_token"), ("card", "card name"),
                                        ("number", "12-digit number")])
def test_a_run_whose_logs_hold_a_secret_fails(tmp_path: Path, leak: str, kind: str) -> None:
    run = _inner_run(tmp_path, leak)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert "secrets in server logs" in run.stdout and f": {kind} (" in run.stdout, run.stdout
    assert "2 passed" in run.stdout  # the tests themselves passed: the scan failed the run
    assert TOKEN not in run.stdout and "漏洩　試験" not in run.stdout  # the report names, never repeats


def test_a_clean_run_passes(tmp_path: Path) -> None:
    run = _inner_run(tmp_path, "nothing")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "secrets in server logs" not in run.stdout


def test_each_xdist_worker_scans_its_logs_and_the_run_fails(tmp_path: Path) -> None:
    run = _inner_run(tmp_path, "token", "-n", "2")
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert ": access_token (" in run.stdout and "log-scan-gw" in run.stdout, run.stdout


def test_what_the_suite_records_is_what_a_scan_finds(idp) -> None:
    """In this very session: a real login's tokens and card were recorded by the hooks."""
    assert log_scan.PLUGIN is not None
    person = card(idp, name="記録　次郎", address="静岡県静岡市記録町一丁目二番三号")
    client = rp(idp)
    result = login(idp, client, idp.wallet().enroll(person))
    recorded = dict(log_scan.PLUGIN.secrets.items())
    planted = "\n".join([
        json.dumps({"message": f"token {result.access_token}"}),
        json.dumps({"message": f"refresh {result.token.get('refresh_token') or ''}"}),
        json.dumps({"message": f"id {result.id_token}"}),
        json.dumps({"message": f"secret {client.client_secret}"}),
        json.dumps({"message": "proved 記録　次郎"}),  # ensure_ascii: the escaped spelling
        json.dumps({"message": f"serial {person.serial_number:x}"}),
        json.dumps({"message": "GET /userinfo 200", "request_id": "0123456789abcdef0123456789abcdef"}),
    ])
    kinds = {(f.line, f.kind) for f in log_scan.scan_text(planted, "planted.log", recorded.items())}
    assert {(1, "access_token"), (3, "id_token"), (4, "client_secret"), (5, "card name"),
            (6, "JPKI serial")} <= kinds
    assert not {kind for line, kind in kinds if line == 7}



def test_in_process_records_are_what_idp_serve_would_write(idp) -> None:
    """The IdP's records from INFO, the libraries' from WARNING: authlib's debug line
    "Issue token …" (shown by a test that turns the root logger to DEBUG) is no server log."""
    assert log_scan.PLUGIN is not None and log_scan.PLUGIN.logs
    in_process = log_scan.PLUGIN.logs[0]
    marks = {name: f"mark-{name}-{secrets.token_hex(6)}" for name in ("library-debug", "library-warning", "idp-info")}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("authlib.oauth2").debug("%s", marks["library-debug"])
        logging.getLogger("authlib.oauth2").warning("%s", marks["library-warning"])
        logging.getLogger("idp.oidc").info("%s", marks["idp-info"])
    finally:
        root.setLevel(level)
    written = in_process.read_text(encoding="utf-8")
    assert marks["library-debug"] not in written
    assert marks["library-warning"] in written and marks["idp-info"] in written
    line = next(line for line in written.splitlines() if marks["idp-info"] in line)
    assert json.loads(line)["test"].startswith("tests/test_log_scan.py::test_in_process_records")


def test_short_garbage_a_test_sends_is_not_taken_for_a_secret() -> None:
    recorded = log_scan.Secrets()
    recorded.record_request(requests.Request("GET", "http://127.0.0.1:9/userinfo",
                                             headers={"Authorization": "Bearer wrong"}).prepare())
    token = "a" * 12 + "issued-token-value"
    recorded.record_request(requests.Request("GET", "http://127.0.0.1:9/userinfo",
                                             headers={"Authorization": f"DPoP {token}"}).prepare())
    assert {value for value, _ in recorded.items()} >= {token}
    assert "wrong" not in {value for value, _ in recorded.items()}
    assert not log_scan.scan_text('{"message": "wrong_key refused"}', "x.log", recorded.items())
