"""No token or personal value in any server log of the test run (issue 15).

A pytest plugin (registered by tests/conftest.py). While the suite runs it records what
must never be logged:

- every token, code and client secret the IdP hands out over HTTP: a hook on
  ``requests.Session.send`` (every test client, RP and wallet goes through it) reads
  them from JSON answers and from ``Location`` redirects, and the bearer tokens tests
  present;
- every test card it issues (``TestJpkiCA.issue_card``): name, address, date of birth,
  JPKI serial number.

and which logs the IdP wrote: each ``idp serve`` log file (:func:`watch`, called by
tests/support/server.py) and, for the in-process servers, every record of the server
side's loggers, written as JSON lines to a file of the session's temporary folder.

At the end of the session each process (each xdist worker on its own) scans its logs for
those values, for their common encodings, and for any stand-alone 12-digit number or
individual-number spelling; findings (named by kind, file and line, never the value
itself) fail the run. Under xdist each worker hands its findings to the controller, which
reports them all.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests

from idp.ops.logs import JsonFormatter
from idp.privacy import contains_individual_number
from idp.proofing.demo_card import TestJpkiCA

# JSON members and redirect parameters that carry a credential the IdP issued.
SECRET_MEMBERS = frozenset({
    "access_token", "refresh_token", "id_token", "code", "client_secret", "registration_access_token",
})
BEARER_SCHEMES = ("Bearer ", "DPoP ")  # RFC 6750 §2.1, RFC 9449 §7.1
# The IdP's side of an in-process test: its own loggers and the libraries it serves with.
SERVER_LOGGERS = ("idp", "werkzeug", "gunicorn", "authlib", "joserfc", "webauthn", "alembic", "sqlalchemy")
# `idp serve` (idp.ops.logs.configure) writes the IdP's records from INFO and the libraries'
# from WARNING; a library's debug record never reaches a server's log (authlib's debug line
# "Issue token …" holds the token: a test that turns the root logger to DEBUG sees it).
LIBRARY_LEVEL = logging.WARNING
MIN_LENGTH = 5  # shorter personal values would match by chance
TOKEN_MIN_LENGTH = 16  # every credential the IdP issues is longer; "Bearer wrong" in a test is no secret
TWELVE_DIGITS = re.compile(r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])")
WORKER_KEY = "log_scan_findings"


@dataclass(frozen=True)
class Finding:
    kind: str  # what leaked: "access_token", "card name", "12-digit number"…
    file: str
    line: int
    hint: str  # the first characters only: the report must not leak the value again
    test: str = ""  # the test that was running, for in-process records

    def __str__(self) -> str:
        during = f" during {self.test}" if self.test else ""
        return f"{self.file}:{self.line}: {self.kind} ({self.hint}…){during}"


class _ServerRecords(logging.Filter):
    """What `idp serve` would write, marked with the test that was running."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == "idp" or record.name.startswith("idp.")) and record.levelno < LIBRARY_LEVEL:
            return False
        record.test = os.environ.get("PYTEST_CURRENT_TEST", "")
        return True


class _TestMarkingFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = json.loads(super().format(record))
        entry["test"] = getattr(record, "test", "")
        return json.dumps(entry, ensure_ascii=False)


class Secrets:
    """Values that must never appear in a log, by kind; thread-safe (parallel() requests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}

    def add(self, kind: str, value: Any, min_length: int = MIN_LENGTH) -> None:
        if not isinstance(value, str) or len(value) < min_length:
            return
        with self._lock:
            for variant in _encodings(value):
                self._values.setdefault(variant, kind)

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._values.items())

    def record_request(self, request: requests.PreparedRequest) -> None:
        """A token the test presents (an initial access token from the command line, say)."""
        authorization = request.headers.get("Authorization", "")
        if isinstance(authorization, bytes):  # tests of undecodable credentials send raw bytes
            authorization = authorization.decode("latin-1")
        for scheme in BEARER_SCHEMES:
            if authorization.startswith(scheme):
                self.add("bearer token", authorization[len(scheme):].strip(), TOKEN_MIN_LENGTH)

    def record_response(self, response: requests.Response) -> None:
        """Tokens, codes and secrets in a JSON answer or a redirect's URL."""
        location = response.headers.get("Location", "")
        if location:
            split = urlsplit(location)
            for name, value in [*parse_qsl(split.query), *parse_qsl(split.fragment)]:
                if name in SECRET_MEMBERS:
                    self.add(name, value, TOKEN_MIN_LENGTH)
        if "json" in response.headers.get("Content-Type", "") and len(response.content) < 1_000_000:
            try:
                self._record_json(response.json())
            except ValueError:
                pass

    def _record_json(self, value: Any) -> None:
        if isinstance(value, dict):
            for key, member in value.items():
                if key in SECRET_MEMBERS and isinstance(member, str):
                    self.add(key, member, TOKEN_MIN_LENGTH)
                    if key in ("id_token", "access_token") and member.count(".") == 2:
                        self.add(f"{key} claims", member.split(".")[1], TOKEN_MIN_LENGTH)  # the claims part alone
                else:
                    self._record_json(member)
        elif isinstance(value, list):
            for member in value:
                self._record_json(member)

    def record_card(self, arguments: dict[str, Any], card: Any) -> None:
        """A test card's personal values and JPKI serial number."""
        name = arguments["name"]
        self.add("card name", name)
        self.add("card name", name.replace("\u3000", " "))
        self.add("card address", arguments["address"])
        birth = arguments["date_of_birth"]
        self.add("card date of birth", birth)
        if len(birth) == 9 and birth[1:].isdigit() and birth[1:] != "0" * 8:
            self.add("card date of birth", f"{birth[1:5]}-{birth[5:7]}-{birth[7:]}")
        serial = card.serial_number
        self.add("JPKI serial", format(serial, "x"))
        self.add("JPKI serial", format(serial, "X"))
        self.add("JPKI serial", str(serial))


def _encodings(value: str) -> Iterator[str]:
    """The value as a log line could hold it: as is, URL-encoded, JSON-escaped."""
    yield value
    for encoded in (quote(value, safe=""), json.dumps(value)[1:-1]):
        if encoded != value:
            yield encoded


class LogScan:
    """The plugin: records while the session runs, scans at its end (see the module doc)."""

    def __init__(self) -> None:
        self.secrets = Secrets()
        self.logs: list[Path] = []
        self.findings: list[Finding] = []
        self._handler: logging.Handler | None = None
        self._undo: list[Any] = []

    # --- recording ------------------------------------------------------------------
    def watch(self, path: Path) -> None:
        if path not in self.logs:
            self.logs.append(path)

    def start(self, folder: Path) -> None:
        secrets = self.secrets
        send = requests.Session.send

        @functools.wraps(send)
        def recording_send(session: requests.Session, request: Any, **kwargs: Any) -> requests.Response:
            secrets.record_request(request)
            response = send(session, request, **kwargs)
            secrets.record_response(response)
            return response

        issue_card = TestJpkiCA.issue_card
        signature = inspect.signature(issue_card)

        @functools.wraps(issue_card)
        def recording_issue_card(ca: TestJpkiCA, *args: Any, **kwargs: Any) -> Any:
            card = issue_card(ca, *args, **kwargs)
            bound = signature.bind(ca, *args, **kwargs)
            bound.apply_defaults()
            secrets.record_card(bound.arguments, card)
            return card

        requests.Session.send = recording_send  # type: ignore[method-assign]
        TestJpkiCA.issue_card = recording_issue_card  # type: ignore[method-assign]
        self._undo += [lambda: setattr(requests.Session, "send", send),
                       lambda: setattr(TestJpkiCA, "issue_card", issue_card)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "in-process.log"
        handler = logging.FileHandler(path, encoding="utf-8", delay=False)
        handler.setFormatter(_TestMarkingFormatter("in-process"))
        handler.addFilter(_ServerRecords())
        for name in SERVER_LOGGERS:
            logging.getLogger(name).addHandler(handler)
        logging.getLogger("idp").setLevel(logging.INFO)  # what `idp serve` logs (idp.ops.logs.configure)
        self._handler = handler
        self.watch(path)

    def stop(self) -> None:
        if self._handler is not None:
            for name in SERVER_LOGGERS:
                logging.getLogger(name).removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    # --- scanning -------------------------------------------------------------------
    def scan(self) -> list[Finding]:
        secrets = self.secrets.items()
        found: list[Finding] = []
        for path in self.logs:
            if path.exists():
                found += scan_text(path.read_text(encoding="utf-8", errors="replace"), str(path), secrets)
        return found


def scan_text(text: str, name: str, secrets: Iterable[tuple[str, str]]) -> list[Finding]:
    """Every line of ``text`` holding a recorded value, a 12-digit number or an
    individual-number spelling."""
    found: list[Finding] = []
    secrets = list(secrets)
    for number, line in enumerate(text.splitlines(), start=1):
        hits = [(kind, value[:4]) for value, kind in secrets if value in line]
        twelve = TWELVE_DIGITS.search(unicodedata.normalize("NFKC", line))
        if twelve:
            hits.append(("12-digit number", twelve.group(0)[:4]))
        elif contains_individual_number(line):
            hits.append(("individual number", ""))
        test = _test_of(line) if hits else ""
        found += [Finding(kind, name, number, hint, test) for kind, hint in hits]
    return found


def _test_of(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return ""
    return str(entry.get("test", "")) if isinstance(entry, dict) else ""


PLUGIN: LogScan | None = None


def watch(path: Path) -> None:
    """Scan ``path`` (a server's log file) at the end of the session."""
    if PLUGIN is not None:
        PLUGIN.watch(path)


class Hooks:
    """pytest hooks of :class:`LogScan`; xdist's hooks are optional (it may not be loaded)."""

    def __init__(self, scan: LogScan) -> None:
        self.scan = scan
        self.from_workers: list[Finding] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        worker = getattr(session.config, "workerinput", {}).get("workerid", "main")
        folder = session.config._tmp_path_factory.getbasetemp() / f"log-scan-{worker}"  # type: ignore[attr-defined]
        self.scan.start(folder)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.scan.stop()
        own = self.scan.scan()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports and fails
            workeroutput[WORKER_KEY] = [asdict(finding) for finding in own]
            return
        self.scan.findings = own + self.from_workers
        if self.scan.findings:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        self.from_workers += [Finding(**finding) for finding in output.get(WORKER_KEY, [])]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.scan.findings:
            terminalreporter.section("secrets in server logs", sep="=", red=True, bold=True)
            terminalreporter.line(f"{len(self.scan.findings)} log line(s) hold what a server must never log "
                                  "(tests/support/log_scan.py); the run fails", red=True)
            for finding in self.scan.findings:
                terminalreporter.line(str(finding), red=True)


def register(config: pytest.Config) -> None:
    """Install the plugin for this session (tests/conftest.py's ``pytest_configure``)."""
    global PLUGIN
    if config.pluginmanager.has_plugin("idp-log-scan"):
        return
    PLUGIN = LogScan()
    config.pluginmanager.register(Hooks(PLUGIN), "idp-log-scan")
