#!/usr/bin/env python3
"""Load driver: complete OpenID Connect logins against a real ``idp serve`` (gunicorn).

What it does, in order (see bench/README.md):

1. Prepares a throw-away deployment in a temporary folder: keys, a SQLite database (or a
   fresh database on the PostgreSQL server named by ``--database-url``, dropped at the
   end), a TEST JPKI CA whose root is the only configured trust anchor, rate limits off
   (``IDP_RATE_LIMIT_PER_MINUTE=0``), issuer ``http://127.0.0.1:<free port>``. Runs
   ``idp init``, then ``idp serve --workers N`` as a subprocess and waits for discovery.
2. Registers two relying parties (municipal and transport) and enrols ``--people``
   persons, each with a test My Number Card and a software authenticator. Not timed.
3. Runs complete logins with ``--concurrency`` client threads, each a browser with one
   keep-alive connection and a cookie jar per person, plus an RP back channel per RP
   (``light_http.py``: a small HTTP/1.1 client, so the driver costs the shared cores
   little): authorize → /login page (with the passkey options embedded, or
   /login/options on older commits) → (client signs) → /login/assertion → its ``next``
   (/consent, page + POST the first time, or the RP callback when the consent is
   remembered) → token → ID token validation → userinfo. Each person belongs to one
   thread (a sign counter must never be raced). By default every flow starts with an
   empty cookie jar, so each one is a real device-signature login; ``--keep-session``
   keeps the IdP session cookie and measures silent (SSO) logins instead.
4. Prints flows/s, p50/p95/p99 of a whole flow and of each step, errors by kind, the
   server's memory (RSS and PSS summed over gunicorn's workers, from /proc) at start, peak
   and end, and CPU seconds of the server, the driver, PostgreSQL and any other process
   (a disturbed run shows); ``--json FILE`` writes the same figures. Exits 1 when no flow
   succeeded or more than 1 % failed.

Everything is on loopback; the run stops by itself after ``--duration`` seconds or
``--flows`` flows (hard cap ``--time-limit``), and the server is stopped and the
temporary deployment removed on every exit path.

    .venv/bin/python bench/login_flow.py                      # SQLite, 3 workers, 8 clients, 20 s
    .venv/bin/python bench/login_flow.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/login_flow.py --flows 500 --json /tmp/bench.json
    .venv/bin/python bench/login_flow.py --profile /tmp/prof   # py-spy flame graph of the workers
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent


def _source_argument(argv: list[str]) -> Path:
    """``--source DIR`` read before the imports below, so the driver's test clients come from
    the same tree as the server (a snapshot is not disturbed by edits in the checkout)."""
    for i, arg in enumerate(argv):
        if arg == "--source" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--source="):
            return Path(arg.split("=", 1)[1]).resolve()
    return ROOT


SOURCE = _source_argument(sys.argv[1:])
for _path in dict.fromkeys([str(SOURCE), str(ROOT)]):
    if _path in sys.path:
        sys.path.remove(_path)
sys.path[:0] = list(dict.fromkeys([str(SOURCE), str(ROOT)]))
if str(ROOT / "bench") not in sys.path:  # light_http, the driver's transport, is always this checkout's
    sys.path.append(str(ROOT / "bench"))

import requests  # noqa: E402  (set-up only: readiness, registration, enrolment)
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from light_http import BenchRP, Browser, JwksCache, Response, page_has_hook  # noqa: E402

from idp.proofing.demo_card import TestJpkiCA  # noqa: E402
from tests.support.http import body_of  # noqa: E402
from tests.support.rp import (  # noqa: E402
    AuthorizationError,
    BrowserFlowError,
    IdTokenError,
    RelyingParty,
    RPError,
    parse_consent_form,
)
from tests.support.wallet import Enrolled, Wallet, WalletError  # noqa: E402

LOOPBACK = "127.0.0.1"
REQUEST_TIMEOUT = 30.0
STEPS = (
    "authorize", "login_page", "options", "sign", "assertion",
    "consent", "consent_post", "token", "validate", "userinfo",
)
CLIENT_SIDE_STEPS = frozenset({"sign", "validate"})  # measured in the driver, no HTTP
RPS = {
    # category: (scope, redirect host) - two hosts so the RPs are in different sectors
    "municipal": ("openid profile address", "127.0.0.1"),
    "transport": ("openid age", "localhost"),
}
PREFECTURES = (
    ("群馬県", "前橋市", "群馬県前橋市大手町二丁目１２番１号"),
    ("東京都", "千代田区", "東京都千代田区霞が関一丁目２番２号"),
    ("大阪府", "大阪市", "大阪府大阪市中央区大手前二丁目１番２２号"),
    ("北海道", "札幌市", "北海道札幌市中央区北三条西六丁目"),
)
NAMES = ("前橋　太郎", "霞ヶ関　花子", "大手前　一郎", "北条　さくら", "高崎　健", "桐生　美咲")
BIRTHDATES = ("419800101", "420050315", "319550720", "419991231", "420100401", "319400101")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# /proc: processes, memory, CPU ---------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers are children of the master)."""
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    found.update(int(p) for p in handle.read().split())
            except OSError:
                pass
    except OSError:
        return []
    return sorted(found)


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class MemorySample:
    """Memory of the gunicorn master and its workers, in MiB."""

    workers: int
    workers_rss_mib: float
    workers_pss_mib: float
    master_rss_mib: float
    per_worker_rss_mib: list[float]

    @classmethod
    def take(cls, master: int, pss: bool = True) -> MemorySample:
        """``pss=False``: RSS only (PSS 0), which is cheap (see MemoryWatcher)."""
        workers = children_of(master)
        rss = [_status_kb(pid, "VmRSS") / 1024 for pid in workers]
        return cls(
            workers=len(workers),
            workers_rss_mib=round(sum(rss), 1),
            workers_pss_mib=round(sum(_pss_kb(pid) for pid in workers) / 1024, 1) if pss else 0.0,
            master_rss_mib=round(_status_kb(master, "VmRSS") / 1024, 1),
            per_worker_rss_mib=[round(r, 1) for r in rss],
        )


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all cores from /proc/stat: everything running here, not only us."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return float(sum(values[:8]) - idle), float(sum(values[:8]))


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every local ``postgres`` process by pid (the database's share of the work)."""
    found: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as handle:
                    if handle.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            found[int(name)] = _cpu_seconds(int(name))
    return found


def server_cpu_seconds(master: int) -> float:
    return _cpu_seconds(master) + sum(_cpu_seconds(pid) for pid in children_of(master))


class MemoryWatcher(threading.Thread):
    """Samples the workers' memory to find its peak: RSS every ``interval`` seconds, PSS every
    ``pss_interval`` seconds. Reading RSS (``/proc/<pid>/status``) costs microseconds, PSS
    (``smaps_rollup``) walks a worker's page tables: about 4 ms of kernel time per worker and
    read, charged to the driver and taken from the cores the server runs on. The peak is the
    sample with the highest RSS, with the highest PSS seen."""

    def __init__(self, master: int, interval: float = 0.5, pss_interval: float = 5.0) -> None:
        super().__init__(daemon=True, name="memory-watcher")
        self.master = master
        self.interval = interval
        self.pss_interval = pss_interval
        self._peak: MemorySample | None = None
        self._peak_pss = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        pss_due = 0.0
        while not self._halt.wait(self.interval):
            with_pss = time.monotonic() >= pss_due
            if with_pss:
                pss_due = time.monotonic() + self.pss_interval
            sample = MemorySample.take(self.master, pss=with_pss)
            self._peak_pss = max(self._peak_pss, sample.workers_pss_mib)
            if self._peak is None or sample.workers_rss_mib > self._peak.workers_rss_mib:
                self._peak = sample

    @property
    def peak(self) -> MemorySample | None:
        return None if self._peak is None else replace(self._peak, workers_pss_mib=self._peak_pss)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# the deployment ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def serve_command(args: argparse.Namespace, port: int) -> list[str]:
    """``idp serve`` (gunicorn, gthread or sync workers), or for comparison the same app under
    granian's WSGI interface (``--worker-class granian``; granian installed by hand, not a dependency)."""
    if args.worker_class == "granian":
        return [str(Path(sys.executable).parent / "granian"), "--interface", "wsgi", "--host", LOOPBACK,
                "--port", str(port), "--workers", str(args.workers), "--blocking-threads", str(args.threads),
                "--no-access-log", "--factory", "idp:create_app"]
    options = ["--worker-class", args.worker_class] if args.worker_class != "gthread" else []
    options += ["--threads", str(args.threads)] if args.threads != 4 else []  # older commits know neither option
    return idp_command() + ["serve", "--host", LOOPBACK, "--port", str(port), "--workers", str(args.workers), *options]


def idp_command() -> list[str]:
    """The ``idp`` console script of this interpreter's environment (else ``python -m idp.cli``)."""
    script = Path(sys.executable).parent / "idp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "idp.cli"]


@contextmanager
def database(url: str | None, folder: Path, create: bool) -> Iterator[str]:
    """A SQLite file in ``folder``, or a fresh database on the server of a PostgreSQL URL."""
    if not url:
        yield f"sqlite:///{folder / 'idp.sqlite3'}"
        return
    if not url.startswith("postgresql") or not create:
        yield url
        return
    import psycopg

    name = f"idp_bench_{uuid.uuid4().hex[:12]}"
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log(f"created PostgreSQL database {name}")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped PostgreSQL database {name}")


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    registration_token: str
    jpki_ca: TestJpkiCA

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        return children_of(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
        except OSError:
            return 0


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the gunicorn master we started (it stops its workers); SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    workers = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    for pid in workers:  # orphans only if the master died without reaping them
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@contextmanager
def deployment(args: argparse.Namespace) -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    process: subprocess.Popen | None = None
    try:
        with database(args.database_url, folder, create=not args.no_create_database) as db_url:
            port = args.port or free_port()
            base_url = f"http://{LOOPBACK}:{port}"
            jpki_ca = TestJpkiCA.create()
            anchors = folder / "jpki"
            anchors.mkdir()
            (anchors / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
            token = secrets.token_urlsafe(24)
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
            env.update({
                "IDP_ISSUER": base_url,
                "IDP_KEYS_DIR": str(folder / "keys"),
                "IDP_INSTANCE_DIR": str(folder / "instance"),
                "IDP_DATABASE_URL": db_url,
                "IDP_JPKI_TRUST_ANCHORS": str(anchors),
                "IDP_RATE_LIMIT_PER_MINUTE": "0",
                "IDP_ALLOW_HTTP_LOOPBACK": "1",
                "IDP_ALLOW_SYNCED_KEYS": "0",
                "IDP_REGISTRATION_TOKEN": token,
                "PYTHONUNBUFFERED": "1",
                # the checkout first: an editable install made before idp/__init__.py existed maps
                # `idp` to a namespace package, and the console script does not have cwd on sys.path
                "PYTHONPATH": os.pathsep.join(filter(None, [str(args.source), os.environ.get("PYTHONPATH")])),
            })
            init = subprocess.run(idp_command() + ["init"], env=env, cwd=folder, capture_output=True, text=True, timeout=120)
            if init.returncode != 0:
                raise SystemExit(f"idp init failed ({init.returncode}): {init.stderr.strip()}")
            log_path = folder / "server.log"
            with open(log_path, "wb") as server_log:
                process = subprocess.Popen(
                    serve_command(args, port),
                    env=env, cwd=folder, stdout=server_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            server = Server(base_url, process, log_path, token, jpki_ca)
            _wait_ready(server, args.workers)
            log(f"idp serve pid {process.pid} on {base_url}, workers {server.workers()}, "
                f"database {_redact(db_url)}, code from {args.source}")
            try:
                yield server
            finally:
                _stop(process)
    finally:
        if process is not None:
            _stop(process)
        if args.keep:
            log(f"deployment kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _wait_ready(server: Server, workers: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    url = server.base_url + "/.well-known/openid-configuration"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"idp serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(url, timeout=2).status_code == 200 and len(server.workers()) >= workers:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"idp serve did not answer discovery within {timeout:.0f} s:\n{server.log_tail()}")


# population (not timed) --------------------------------------------------------------------------
@dataclass
class Person:
    index: int
    enrolled: Enrolled


def register_rps(server: Server, id_token_alg: str = "ES256") -> dict[str, RelyingParty]:
    """The two RPs; their ID tokens are signed with ``id_token_alg`` (ES256 by default, as the
    reference provider's bench signs them; RS256 costs the server about 0.6 ms more per login)."""
    rps = {}
    for category, (scope, host) in RPS.items():
        rps[category] = RelyingParty.register(
            server.base_url,
            redirect_uri=f"http://{host}:9/{category}/callback",  # never followed: the driver stops at it
            rp_category=category,
            registration_token=server.registration_token,
            scope=scope,
            client_name=f"Bench {category} RP",
            id_token_signed_response_alg=id_token_alg,
        )
    return rps


def enrol_people(server: Server, count: int, threads: int) -> list[Person]:
    def one(index: int) -> Person:
        prefecture, municipality, address = PREFECTURES[index % len(PREFECTURES)]
        card = server.jpki_ca.issue_card(
            name=NAMES[index % len(NAMES)], date_of_birth=BIRTHDATES[index % len(BIRTHDATES)],
            gender=str(1 + index % 3), prefecture=prefecture, municipality=municipality, address=address,
        )
        with requests.Session() as session:
            return Person(index, Wallet(server.base_url, session=session).enroll(card))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, range(count)))


# the timed flows ------------------------------------------------------------------------------------
class FlowFailed(Exception):
    def __init__(self, step: str, kind: str) -> None:
        super().__init__(f"{step}: {kind}")
        self.step = step
        self.kind = kind


def classify(exc: BaseException) -> str:
    """A short, aggregatable name for what went wrong."""
    if isinstance(exc, (WalletError, RPError)):
        error = exc.error or (str(exc.body)[:60] if exc.body else "")
        return f"HTTP {exc.status} {error}".strip()
    if isinstance(exc, AuthorizationError):
        return f"authorization error {exc.error}"
    if isinstance(exc, IdTokenError):
        return f"id_token {exc.reason}"
    if isinstance(exc, BrowserFlowError):
        status = f"HTTP {exc.response.status_code} " if exc.response is not None else ""
        return f"{status}{exc}"[:100]
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):  # refused, reset (RemoteDisconnected: closed without a response), ...
        return f"connection error ({type(exc).__name__})"
    if isinstance(exc, http.client.HTTPException):  # a response the driver could not read
        return f"bad response ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:100]


@dataclass
class FlowResult:
    kind: str  # "login" or "silent" (SSO session), "+consent" when the consent page was answered
    started: float
    total: float
    steps: dict[str, float]


@dataclass
class Results:
    flows: list[FlowResult] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    attempted: int = 0  # every flow run, warm-up included (for CPU per flow)
    connections: Counter = field(default_factory=Counter)  # opened, retried (see Client.connection_counts)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ran(self) -> None:
        with self.lock:
            self.attempted += 1

    def add(self, flow: FlowResult) -> None:
        with self.lock:
            self.flows.append(flow)

    def fail(self, step: str, kind: str) -> None:
        with self.lock:
            self.errors[f"{step}: {kind}"] += 1


class _Steps:
    """Wall time per step of one flow (``with steps("token"): …``); ``current`` names the step a
    failure belongs to."""

    __slots__ = ("times", "current", "_begin")

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.current = "authorize"
        self._begin = 0.0

    def __call__(self, name: str) -> _Steps:
        self.current = name
        return self

    def __enter__(self) -> None:
        self._begin = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.times[self.current] = self.times.get(self.current, 0.0) + time.perf_counter() - self._begin


class Client:
    """One client thread: a browser (one keep-alive connection to the IdP, a cookie jar per
    person), an RP back channel per registered RP (own connection, own pending-state map), and
    the people it serves in turn. Each person has their own cookie jar, so with
    ``keep_session`` a silent login is that person's own SSO session, never the previous
    person's; without it the jar is emptied before every flow. The pairwise ``sub`` each
    person first gets at each RP is remembered, and every later flow must give the same one.
    The transport is ``light_http`` (not requests/authlib), which costs the shared CPU far less.
    """

    def __init__(self, base_url: str, rps: dict[str, RelyingParty], people: list[Person], keep_session: bool,
                 jwks: JwksCache | None = None) -> None:
        self.base_url = base_url
        self.browser = Browser(base_url, REQUEST_TIMEOUT)
        if jwks is None:  # the JWKS the registered RPs fetched during set-up
            first = next(iter(rps.values()))
            jwks = JwksCache(first.provider["jwks_uri"], first._jwks, REQUEST_TIMEOUT)
        self.rps = [BenchRP(rp, jwks, REQUEST_TIMEOUT) for rp in rps.values()]
        self.people = people
        self.keep_session = keep_session
        self.jars = {person.index: self.browser.new_jar() for person in people}
        self.subs: dict[tuple[int, str], str] = {}
        self.count = 0

    def close(self) -> None:
        self.browser.close()
        for rp in self.rps:
            rp.close()

    def connection_counts(self) -> Counter:
        """Connections opened, and requests sent again after meeting a stale keep-alive connection."""
        connections = [self.browser.connection] + [rp.connection for rp in self.rps]
        return Counter(opened=sum(c.opened for c in connections), retried=sum(c.retried for c in connections))

    def run_one(self) -> FlowResult:
        person = self.people[self.count % len(self.people)]
        rp = self.rps[(self.count // len(self.people)) % len(self.rps)]
        self.count += 1
        browser = self.browser
        browser.jar = self.jars[person.index]
        if not self.keep_session:
            browser.jar.clear()
        timed = _Steps()
        started = time.perf_counter()
        try:
            kind = "silent"
            with timed("authorize"):
                url = rp.authentication_request()
                url = self._redirect(browser.get(url), url)
            for _ in range(6):
                if not url.startswith(self.base_url):
                    break
                path = urlsplit(url).path
                if path == "/login":
                    kind = "login"
                    url = self._login(url, person, timed)
                elif path == "/consent":
                    with timed("consent"):
                        response = browser.get(url)
                        target = self._redirect(response, url, allow_page=True)
                    if target is None:
                        kind += "+consent"
                        with timed("consent_post"):
                            form = parse_consent_form(response.text)
                            target = self._redirect(browser.post_form(urljoin(url, form.action),
                                                                      form.submission("allow")), url)
                    url = target
                else:
                    with timed(f"other {path}"):
                        url = self._redirect(browser.get(url), url)
            else:
                raise BrowserFlowError("no redirect to the RP within 6 steps")
            with timed("token"):
                request, params = rp.parse_callback(url)
                token = rp.fetch_token(params["code"], request)
            with timed("validate"):
                result = rp._token_result(token, request)
            with timed("userinfo"):
                claims = rp.fetch_userinfo(result.access_token)
            if claims.get("sub") != result.sub:
                raise FlowFailed("userinfo", "sub differs from the ID token's")
            known = self.subs.setdefault((person.index, rp.client_id), result.sub)
            if known != result.sub:
                raise FlowFailed("validate", "sub differs from this person's earlier sub at this RP")
        except FlowFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
            raise FlowFailed(timed.current, classify(exc)) from exc
        return FlowResult(kind, started, time.perf_counter() - started, timed.times)

    def _login(self, url: str, person: Person, timed: _Steps) -> str:
        with timed("login_page"):
            response = self.browser.get(url)
            if response.status_code != 200:
                raise BrowserFlowError(f"/login answered {response.status_code}", response)
            page = response.text
            if not page_has_hook(page, "action", "passkey"):
                raise BrowserFlowError('/login page has no data-action="passkey"', response)
            public_key = embedded_options(page)
        txn = dict(parse_qsl(urlsplit(url).query)).get("txn", "")
        if public_key is None:  # a commit whose page does not carry the options: ask as its script does
            with timed("options"):
                public_key = self._wallet_call(url, "/login/options", {"txn": txn})["publicKey"]
        with timed("sign"):
            enrolled = person.enrolled
            credential = enrolled.authenticator.get(public_key, credential_id=enrolled.credential_id)
        with timed("assertion"):
            answer = self._wallet_call(url, "/login/assertion", {"txn": txn, "credential": credential})
        return urljoin(url, answer["next"])

    def _wallet_call(self, url: str, path: str, body: dict) -> dict:
        """The page's script calling the wallet API with the browser's cookies (same device);
        a non-2xx answer raises WalletError as ``Wallet.call`` does."""
        response = self.browser.post_json(urljoin(url, path), body)
        answer = body_of(response)
        if not 200 <= response.status_code < 300:
            raise WalletError(response.status_code, answer, response)
        return answer

    @staticmethod
    def _redirect(response: Response, url: str, allow_page: bool = False) -> Any:
        if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
            return urljoin(url, response.headers["Location"])
        if allow_page and response.status_code == 200:
            return None
        raise BrowserFlowError(f"{urlsplit(url).path} answered {response.status_code}, not a redirect", response)


_LOGIN_OPTIONS = re.compile(r'<script type="application/json" id="login-options">(.*?)</script>', re.S)


def embedded_options(page: str) -> dict | None:
    """The passkey request options the login page carries for its script, if it does."""
    found = _LOGIN_OPTIONS.search(page)
    return json.loads(found.group(1)) if found else None


def run_load(
    server: Server, rps: dict[str, RelyingParty], people: list[Person], args: argparse.Namespace
) -> tuple[Results, float, float]:
    """Run the clients; returns (results, measured window start, end) in perf_counter time."""
    results = Results()
    concurrency = min(args.concurrency, len(people))
    shares = [people[i::concurrency] for i in range(concurrency)]
    budget = threading.Semaphore(args.flows) if args.flows else None
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = start + (args.time_limit if args.flows else args.warmup + args.duration)
    abort = threading.Event()
    registered = next(iter(rps.values()))
    jwks = JwksCache(registered.provider["jwks_uri"], registered.jwks(), REQUEST_TIMEOUT)  # shared by every thread

    def worker(share: list[Person]) -> None:
        client = Client(server.base_url, rps, share, args.keep_session, jwks)
        try:
            while not abort.is_set() and time.perf_counter() < stop_at:
                if budget is not None and not budget.acquire(blocking=False):
                    return
                try:
                    flow = client.run_one()
                except FlowFailed as failed:
                    results.ran()
                    if time.perf_counter() >= measure_from:
                        results.fail(failed.step, failed.kind)
                    if args.max_errors and sum(results.errors.values()) >= args.max_errors:
                        abort.set()
                    continue
                results.ran()
                if flow.started >= measure_from:
                    results.add(flow)
        finally:
            client.close()
            with results.lock:
                results.connections.update(client.connection_counts())

    threads = [threading.Thread(target=worker, args=(share,), name=f"client-{i}", daemon=True)
               for i, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    last_report = start
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
        now = time.perf_counter()
        if now - last_report >= 5:
            last_report = now
            with results.lock:
                done, failed = len(results.flows), sum(results.errors.values())
            log(f"{now - start:5.1f} s: {done} flows measured, {failed} errors")
        if now > stop_at + REQUEST_TIMEOUT + 10:  # a hung request: give up on it
            abort.set()
            log("clients did not stop in time; abandoning them")
            break
    if abort.is_set() and args.max_errors and sum(results.errors.values()) >= args.max_errors:
        log(f"stopped early: {args.max_errors} errors")
    end = max((f.started + f.total for f in results.flows), default=time.perf_counter())
    return results, measure_from, end


# statistics and report ---------------------------------------------------------------------------------
def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def distribution(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    if not ordered:  # JSON has no NaN: empty distributions are null
        return {"count": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(ordered),
        "mean_ms": ms(sum(ordered) / len(ordered)),
        "p50_ms": ms(percentile(ordered, 50)),
        "p95_ms": ms(percentile(ordered, 95)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]),
    }


def summarise(results: Results, window: float) -> dict[str, Any]:
    flows = results.flows
    by_step: dict[str, list[float]] = defaultdict(list)
    for flow in flows:
        for name, seconds in flow.steps.items():
            by_step[name].append(seconds)
    names = [s for s in STEPS if s in by_step] + sorted(s for s in by_step if s not in STEPS)
    requests_per_flow = {
        kind: n for kind, n in Counter(f.kind for f in flows).items()
    }
    return {
        "flows": len(flows),
        "errors": sum(results.errors.values()),
        "window_s": round(window, 2),
        "flows_per_s": round(len(flows) / window, 2) if window > 0 else 0.0,
        "flow_kinds": requests_per_flow,
        "flow": distribution([f.total for f in flows]),
        "flow_by_kind": {
            kind: distribution([f.total for f in flows if f.kind == kind]) for kind in sorted(requests_per_flow)
        },
        "steps": {name: distribution(by_step[name]) for name in names},
        "errors_by_kind": dict(results.errors.most_common()),
        # the driver's keep-alive connections: how many it opened, and how many requests it sent
        # again because they met a connection the server had just closed (as a browser does)
        "connections": {"opened": results.connections["opened"], "retried": results.connections["retried"]},
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["summary"]
    cfg = report["config"]
    out = sys.stdout
    print(file=out)
    print(f"Login flows against idp serve ({cfg['database']}, {cfg['workers']} workers × 4 threads, "
          f"{cfg['concurrency']} clients, {cfg['people']} people, "
          f"{'SSO sessions kept' if cfg['keep_session'] else 'fresh browser per flow'})", file=out)
    print(f"  flows: {s['flows']} ok, {s['errors']} failed in {s['window_s']} s  →  {s['flows_per_s']} flows/s",
          file=out)
    print(f"  kinds: {', '.join(f'{k} {v}' for k, v in sorted(s['flow_kinds'].items())) or '-'}", file=out)
    header = f"  {'':<22}{'count':>7}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   (ms)"
    print(header, file=out)

    def row(label: str, d: dict[str, Any]) -> None:
        if not d["count"]:
            print(f"  {label:<22}{0:>7}", file=out)
            return
        print(f"  {label:<22}{d['count']:>7}{d['mean_ms']:>9.1f}{d['p50_ms']:>9.1f}{d['p95_ms']:>9.1f}"
              f"{d['p99_ms']:>9.1f}{d['max_ms']:>9.1f}", file=out)

    row("whole flow", s["flow"])
    for kind, d in s["flow_by_kind"].items():
        row(f"  {kind}", d)
    for name, d in s["steps"].items():
        row(f"{name}{' (client)' if name in CLIENT_SIDE_STEPS else ''}", d)
    if s["errors_by_kind"]:
        print("  errors by kind:", file=out)
        for kind, n in s["errors_by_kind"].items():
            print(f"    {n:>6}  {kind}", file=out)
    else:
        print("  errors: none", file=out)
    connections = s["connections"]
    print(f"  connections: {connections['opened']} opened by the driver, "
          f"{connections['retried']} requests sent again after a stale keep-alive connection", file=out)
    m = report["memory"]
    for label in ("start", "peak", "end"):
        sample = m.get(label)
        if sample:
            print(f"  memory {label:<5}: workers RSS {sample['workers_rss_mib']:.1f} MiB "
                  f"(PSS {sample['workers_pss_mib']:.1f} MiB, per worker {sample['per_worker_rss_mib']}), "
                  f"master RSS {sample['master_rss_mib']:.1f} MiB", file=out)
    c = report["cpu"]
    pg = f", PostgreSQL {c['postgres_s']:.1f} s" if report["config"]["database"] == "postgresql" else ""
    print(f"  CPU: server {c['server_s']:.1f} s ({c['server_ms_per_flow']:.1f} ms/flow), "
          f"driver {c['driver_s']:.1f} s ({c['driver_ms_per_flow']:.1f} ms/flow){pg}; machine "
          f"{c['machine_busy_percent']:.0f}% busy on {c['cores']} cores, other processes {c['others_s']:.1f} s",
          file=out)
    if report["server_tracebacks"]:
        print(f"  server log: {report['server_tracebacks']} tracebacks", file=out)


# profiling (optional) --------------------------------------------------------------------------------
PROFILE_SUFFIX = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "collapsed.txt"}


def start_profiler(
    server: Server, folder: Path, seconds: float, fmt: str = "flamegraph", mode: str = "active"
) -> subprocess.Popen | None:
    """py-spy the gunicorn master and its workers for the load phase (if py-spy is installed).

    ``mode``: ``active`` samples running threads (py-spy's default; a thread blocked inside
    a C call such as SQLite's busy wait counts as running), ``gil`` only the thread holding
    the GIL (where Python CPU time goes), ``idle`` every thread (wall clock: lock, socket and
    database waits included). ``raw`` writes collapsed stacks (flamegraph.pl, speedscope).
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("--profile: py-spy not found (pip install py-spy into the venv); no profile taken")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"workers-{mode}.{PROFILE_SUFFIX[fmt]}"
    command = [py_spy, "record", "--pid", str(server.pid), "--subprocesses", "--format", fmt,
               "--rate", "100", "--duration", str(max(1, int(math.ceil(seconds)))), "--output", str(out)]
    if mode in ("gil", "idle"):
        command.append(f"--{mode}")
    log(f"profiling workers with py-spy → {out}")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(folder / "py-spy.log", "wb"),
                            stdin=subprocess.DEVNULL)


# main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes (4 threads each)")
    parser.add_argument("--id-token-alg", choices=("ES256", "RS256"), default="ES256",
                        help="the RPs' id_token_signed_response_alg")
    parser.add_argument("--worker-class", choices=("gthread", "sync", "granian"), default="gthread",
                        help="gunicorn worker class of idp serve, or granian (pip install granian first)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--concurrency", "-c", type=int, default=8, help="concurrent client threads (browsers)")
    parser.add_argument("--duration", "-d", type=float, default=20.0, help="seconds of measured load")
    parser.add_argument("--flows", "-k", type=int, default=0,
                        help="run this many flows instead of --duration (0: use --duration)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of load before measuring (flows started earlier are not counted)")
    parser.add_argument("--people", "-m", type=int, default=32,
                        help="enrolled persons (at least --concurrency; each belongs to one client thread)")
    parser.add_argument("--keep-session", action="store_true",
                        help="keep the IdP session cookie between flows (silent SSO logins after the first)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="PostgreSQL server URL (a fresh database is created on it and dropped); default SQLite")
    parser.add_argument("--no-create-database", action="store_true",
                        help="use --database-url as it is instead of creating a fresh database on its server")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="folder whose idp/ package is served, e.g. a `git archive` export of one commit "
                             "(default: this checkout, including uncommitted edits)")
    parser.add_argument("--port", type=int, default=0, help="loopback port for the server (0: a free one)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="hard cap on the load phase, seconds")
    parser.add_argument("--max-errors", type=int, default=1000, help="stop after this many failed flows (0: never)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--profile", type=Path, help="folder for a py-spy profile of the workers (needs py-spy)")
    parser.add_argument("--profile-format", choices=sorted(PROFILE_SUFFIX), default="flamegraph",
                        help="py-spy output format")
    parser.add_argument("--profile-mode", choices=("active", "gil", "idle"), default="active",
                        help="py-spy sampling: active threads, the GIL holder only (CPU), or all (wall clock)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary deployment folder")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.concurrency < 1 or args.people < 1:
        parser.error("--workers, --concurrency and --people must be at least 1")
    if args.duration <= 0 and not args.flows:
        parser.error("--duration must be positive (or give --flows)")
    if args.people < args.concurrency:
        log(f"--people {args.people} < --concurrency {args.concurrency}: only {args.people} clients will run")
    args.time_limit = min(args.time_limit, 3600.0)
    args.source = args.source.resolve()
    if args.source != SOURCE:
        parser.error("--source must be given as a command-line argument")
    if not (args.source / "idp" / "__init__.py").exists():
        parser.error(f"--source {args.source}: no idp/__init__.py there")
    return args


def source_commit(source: Path) -> str:
    """The commit served: HEAD of a git checkout (``+edits`` may apply), or a COMMIT file's content."""
    if (source / "COMMIT").is_file():
        return (source / "COMMIT").read_text().strip()[:40]
    if (source / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
            return f"{head[:12]} (working tree, uncommitted edits included)" if head else "unknown"
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with deployment(args) as server:
        setup_started = time.perf_counter()
        rps = register_rps(server, args.id_token_alg)
        for rp in rps.values():
            rp.jwks()
        people = enrol_people(server, args.people, min(args.concurrency, 4))
        log(f"registered {len(rps)} RPs and enrolled {len(people)} people in "
            f"{time.perf_counter() - setup_started:.1f} s (not timed)")

        memory_start = MemorySample.take(server.pid)
        cpu_start = server_cpu_seconds(server.pid)
        driver_start = resource.getrusage(resource.RUSAGE_SELF)
        machine_start = machine_cpu()
        postgres_start = postgres_cpu_seconds() if args.database_url else {}
        watcher = MemoryWatcher(server.pid)
        watcher.start()
        profiler = None
        if args.profile:
            profiler = start_profiler(server, args.profile,
                                      args.warmup + args.duration if not args.flows else args.time_limit,
                                      args.profile_format, args.profile_mode)
        log(f"load: {min(args.concurrency, len(people))} clients, "
            + (f"{args.flows} flows" if args.flows else f"{args.duration:g} s") + (
                f" after {args.warmup:g} s warm-up" if args.warmup else ""))
        results, window_start, window_end = run_load(server, rps, people, args)
        watcher.stop()
        driver_end = resource.getrusage(resource.RUSAGE_SELF)
        machine_end = machine_cpu()
        postgres_end = postgres_cpu_seconds() if args.database_url else {}
        cpu_end = server_cpu_seconds(server.pid)
        memory_end = MemorySample.take(server.pid)
        if profiler is not None:
            if profiler.poll() is None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        tracebacks = server.tracebacks()
        if tracebacks:
            log(f"server log tail:\n{server.log_tail(40)}")
        summary = summarise(results, window_end - window_start)
        flows = max(1, results.attempted)
        server_cpu = cpu_end - cpu_start
        postgres_cpu = sum(max(0.0, t - postgres_start.get(pid, 0.0)) for pid, t in postgres_end.items())
        ticks = os.sysconf("SC_CLK_TCK")
        machine_busy_s = (machine_end[0] - machine_start[0]) / ticks
        driver_cpu = (driver_end.ru_utime + driver_end.ru_stime) - (driver_start.ru_utime + driver_start.ru_stime)
        report = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "config": {
                "source": str(args.source),
                "commit": source_commit(args.source),
                "database": "postgresql" if args.database_url else "sqlite",
                "workers": args.workers, "worker_class": args.worker_class,
                "threads_per_worker": args.threads if args.worker_class == "gthread" else 1, "concurrency": min(args.concurrency, len(people)),
                "people": len(people), "duration_s": args.duration, "flows_limit": args.flows,
                "warmup_s": args.warmup, "keep_session": args.keep_session,
                "rps": {c: s for c, (s, _) in RPS.items()},
            },
            "summary": summary,
            "memory": {
                "start": vars(memory_start),
                "peak": vars(watcher.peak) if watcher.peak else None,
                "end": vars(memory_end),
            },
            "cpu": {
                "cores": os.cpu_count(),
                "server_s": round(server_cpu, 2),
                "server_ms_per_flow": round(server_cpu * 1000 / flows, 1),
                "driver_s": round(driver_cpu, 2),
                "driver_ms_per_flow": round(driver_cpu * 1000 / flows, 1),
                "postgres_s": round(postgres_cpu, 2),
                # all processes on the machine during the load phase; "others" is what neither the
                # server, the driver nor PostgreSQL used: other users' work disturbing the figures
                "machine_busy_percent": round(100 * (machine_end[0] - machine_start[0])
                                              / max(1.0, machine_end[1] - machine_start[1]), 1),
                "others_s": round(max(0.0, machine_busy_s - server_cpu - driver_cpu - postgres_cpu), 2),
            },
            "server_tracebacks": tracebacks,
        }
        print_report(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            log(f"figures written to {args.json}")
        # failure: nothing succeeded, or more than 1 % failed (a rare keep-alive race is not a failure)
        failed = summary["errors"] > 0.01 * (summary["flows"] + summary["errors"])
        return 0 if summary["flows"] and not failed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server was stopped and the deployment removed on the way out
        log("interrupted")
        sys.exit(130)
