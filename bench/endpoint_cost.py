#!/usr/bin/env python3
"""Server CPU time per endpoint of the login flow, measured in-process and without contention.

``login_flow.py`` measures what a client sees under load, which on a small shared machine
moves with everything else running there. This companion runs the same flows one at a
time against the app served in a thread of this process (werkzeug, like the test suite),
and a WSGI wrapper records the *thread CPU time* each request costs the application: a
figure other processes barely disturb, fit for before/after comparisons of a fix.

    .venv/bin/python bench/endpoint_cost.py                  # 200 flows, SQLite
    .venv/bin/python bench/endpoint_cost.py --flows 300 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/endpoint_cost.py --source /tmp/idp-snap --json /tmp/cost.json
    .venv/bin/python bench/endpoint_cost.py --cprofile /tmp/flow.pstats   # cProfile of the app's requests
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import login_flow as lf  # noqa: E402  (sets up sys.path for --source, the checkout and tests.support)
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from idp import audit, create_app  # noqa: E402
from idp.context import initialise  # noqa: E402
from idp.proofing.demo_card import TestJpkiCA  # noqa: E402
from idp.settings import Settings  # noqa: E402


class Meter:
    """WSGI wrapper: thread CPU and wall time of each request, by method and path."""

    def __init__(self, profiler: cProfile.Profile | None = None) -> None:
        self.app: Any = None
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.statements: dict[str, int] = defaultdict(int)
        self.writes: dict[str, int] = defaultdict(int)
        self.current = threading.local()
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.recording = False
        self.profiler = profiler
        self.lock = threading.Lock()
        self.trace: list[tuple[str, str, Any]] | None = None  # (request, statement, parameters) when tracing
        self.flow_cpu: dict[str, list[float]] = defaultdict(list)  # by flow kind: app CPU of each flow
        self.flow_statements: dict[str, list[int]] = defaultdict(list)

    def totals(self) -> tuple[float, int]:
        with self.lock:
            return sum(sum(v) for v in self.cpu.values()), sum(self.statements.values())

    def __call__(self, environ: dict, start_response: Any) -> Any:
        key = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
        cpu, wall = time.thread_time(), time.perf_counter()
        self.current.key = key
        profiling = self.profiler is not None and self.recording
        if profiling:
            self.profiler.enable()
        try:
            body = b"".join(self.app(environ, start_response))
        finally:
            if profiling:
                self.profiler.disable()
            self.current.key = None
            if self.recording:
                with self.lock:
                    self.cpu[key].append(time.thread_time() - cpu)
                    self.wall[key].append(time.perf_counter() - wall)
        return [body]

    def count_statements(self, engine: Any) -> None:
        """Count SQL statements (and writes) per endpoint with an engine event (measurement only)."""
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            key = getattr(self.current, "key", None)
            if key and self.recording:
                with self.lock:
                    self.statements[key] += 1
                    if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                        self.writes[key] += 1
                    if self.trace is not None:
                        self.trace.append((key, statement, parameters))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", "-k", type=int, default=200, help="sequential flows to measure")
    parser.add_argument("--people", "-m", type=int, default=8, help="enrolled persons (flows rotate over them)")
    parser.add_argument("--id-token-alg", choices=("ES256", "RS256"), default="ES256",
                        help="the RPs' id_token_signed_response_alg")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="PostgreSQL server URL (a fresh database is created and dropped); default SQLite")
    parser.add_argument("--source", type=Path, default=lf.ROOT, help="folder whose idp/ package is measured")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile (pstats) of the measured requests here")
    parser.add_argument("--seed-accounts", type=int, default=0,
                        help="insert this many extra accounts, each with an active device and a consent, first")
    parser.add_argument("--seed-clients", type=int, default=0, help="insert this many extra clients first")
    parser.add_argument("--trace-sql", action="store_true",
                        help="print the SQL statements of the last measured flow, by request, with the database's "
                             "query plan of each (a full table scan is flagged)")
    args = parser.parse_args(argv)
    if args.source.resolve() != lf.SOURCE:
        parser.error("--source must be given as a command-line argument")
    args.flows = max(1, min(args.flows, 100_000))

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    folder = Path(tempfile.mkdtemp(prefix="idp-cost-"))
    profiler = cProfile.Profile() if args.cprofile else None
    meter = Meter(profiler)
    server = make_server(lf.LOOPBACK, 0, meter, threaded=True)
    base_url = f"http://{lf.LOOPBACK}:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    try:
        with lf.database(args.database_url, folder, create=True) as db_url:
            jpki_ca = TestJpkiCA.create()
            (folder / "jpki").mkdir()
            (folder / "jpki" / "root.pem").write_bytes(jpki_ca.certificate.public_bytes(Encoding.PEM))
            env = {
                "IDP_ISSUER": base_url, "IDP_KEYS_DIR": str(folder / "keys"),
                "IDP_INSTANCE_DIR": str(folder / "instance"), "IDP_DATABASE_URL": db_url,
                "IDP_JPKI_TRUST_ANCHORS": str(folder / "jpki"), "IDP_RATE_LIMIT_PER_MINUTE": "0",
                "IDP_ALLOW_HTTP_LOOPBACK": "1", "IDP_ALLOW_SYNCED_KEYS": "0",
                "IDP_REGISTRATION_TOKEN": "bench-registration-token-0123456789",
            }
            settings = Settings.from_env(env)
            initialise(settings)
            meter.app = create_app(settings)
            meter.count_statements(meter.app.extensions["idp"].db.engine)
            if args.seed_accounts or args.seed_clients:
                seed(meter.app.extensions["idp"].db.engine, args.seed_accounts, args.seed_clients)
            thread.start()
            handle = lf.Server(base_url, None, folder / "none.log", env["IDP_REGISTRATION_TOKEN"], jpki_ca)  # type: ignore[arg-type]
            rps = lf.register_rps(handle, args.id_token_alg)
            for rp in rps.values():
                rp.jwks()
            people = lf.enrol_people(handle, args.people, 1)
            client = lf.Client(base_url, rps, people, keep_session=False)
            client.run_one()  # warm caches (templates, compiled statements) before measuring
            meter.recording = True
            kinds: dict[str, int] = defaultdict(int)
            started = time.perf_counter()
            for number in range(args.flows):
                if args.trace_sql and number == args.flows - 1:
                    meter.trace = []
                cpu_before, statements_before = meter.totals()
                kind = client.run_one().kind
                cpu_after, statements_after = meter.totals()
                kinds[kind] += 1
                meter.flow_cpu[kind].append(cpu_after - cpu_before)
                meter.flow_statements[kind].append(statements_after - statements_before)
            elapsed = time.perf_counter() - started
            meter.recording = False
            client.close()
            report = build_report(meter, args, dict(kinds), elapsed)
            print_report(report)
            if meter.trace is not None:
                print_plans(meter.app.extensions["idp"].db.engine, meter.trace)
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
                lf.log(f"figures written to {args.json}")
            if profiler is not None:
                profiler.dump_stats(str(args.cprofile))
                lf.log(f"cProfile written to {args.cprofile} (python -m pstats {args.cprofile})")
            audit.anchorer.flush()  # the audit head anchor, while its database and keys folder still exist
            meter.app.extensions["idp"].db.dispose()
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def print_plans(engine: Any, trace: list[tuple[str, str, Any]]) -> None:
    """Each statement of a flow with its plan (SQLite EXPLAIN QUERY PLAN, PostgreSQL EXPLAIN):
    every lookup of the hot path must use an index; a full scan is flagged."""
    sqlite = engine.dialect.name == "sqlite"
    scans = 0
    print("\nSQL statements of the last flow, with their plans:")
    with engine.connect() as connection:
        for key, statement, parameters in trace:
            print(f"  {key:<24} {' '.join(statement.split())[:140]}")
            if statement.lstrip()[:6].upper() == "INSERT":
                continue
            rows = connection.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement,
                                              parameters).all()
            plan = [str(row[-1] if sqlite else row[0]) for row in rows]
            # a table scan: SQLite "SCAN t" (not "SCAN ... USING INDEX"), PostgreSQL "Seq Scan"
            full = [line for line in plan if (sqlite and line.startswith("SCAN") and "USING" not in line)
                    or (not sqlite and "Seq Scan" in line)]
            scans += bool(full)
            print(f"  {'':<24}   plan: {' | '.join(line.strip() for line in plan)[:160]}{'   <-- FULL SCAN' if full else ''}")
            connection.rollback()
    print(f"  statements with a full table scan: {scans}")


def seed(engine: Any, accounts: int, clients: int, batch: int = 5000) -> None:
    """Grow the tables the hot path reads, straight into the database (no HTTP, no crypto):
    accounts with an active device certificate and a consent to one of the seeded clients,
    and clients, so a login can be measured against a populated deployment."""
    import datetime as dt
    import secrets

    from sqlalchemy import insert

    from idp.storage.models import Account, Client, Consent, DeviceCertificate

    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    later = now + dt.timedelta(days=365)
    client_ids = [f"seed-client-{n:06d}" for n in range(max(clients, 1 if accounts else 0))]
    with engine.begin() as connection:
        for start in range(0, len(client_ids), batch):
            connection.execute(insert(Client), [
                {"client_id": cid, "client_secret": secrets.token_hex(32), "client_id_issued_at": int(now.timestamp()),
                 "rp_category": "municipal", "sector_identifier": f"seed{n}.example", "created_at": now,
                 "registration_access_token_hash": secrets.token_hex(32),
                 "client_metadata": {"redirect_uris": [f"https://seed{n}.example/cb"], "client_name": f"Seed {n}",
                                     "rp_category": "municipal", "token_endpoint_auth_method": "client_secret_basic"}}
                for n, cid in enumerate(client_ids[start:start + batch], start)])
    for start in range(0, accounts, batch):
        numbers = range(start, min(start + batch, accounts))
        with engine.begin() as connection:
            connection.execute(insert(Account), [
                {"id": f"seed-{n:09d}", "created_at": now, "name": f"Seed Person {n}", "name_substitution": "",
                 "gender": "1", "date_of_birth": "19800101", "address": "Tokyo", "address_substitution": "",
                 "verified_at": now, "attributes_current": True} for n in numbers])
            connection.execute(insert(DeviceCertificate), [
                {"serial": f"5eed{n:038x}", "account_id": f"seed-{n:09d}", "credential_id": secrets.token_bytes(32),
                 "user_handle": secrets.token_bytes(32), "public_key_cose": b"seed", "certificate_der": b"seed",
                 "state": "active", "issued_at": now, "not_after": later, "sign_count": 0, "backup_eligible": False,
                 "hardware_attested": False, "aaguid": "", "model_hint": "", "failed_attempts": 0, "lock_count": 0}
                for n in numbers])
            connection.execute(insert(Consent), [
                {"account_id": f"seed-{n:09d}", "client_id": client_ids[n % len(client_ids)], "claims": ["name"],
                 "scopes": [], "purpose": "", "policy_version": "seed", "granted_at": now} for n in numbers])
    lf.log(f"seeded {accounts} accounts (device, consent each) and {len(client_ids)} clients "
           f"in {time.perf_counter() - started:.1f} s")


def build_report(meter: Meter, args: argparse.Namespace, kinds: dict[str, int], elapsed: float) -> dict[str, Any]:
    endpoints = {}
    total_cpu = 0.0
    for key in sorted(meter.cpu, key=lambda k: -sum(meter.cpu[k])):
        cpu = sorted(meter.cpu[key])
        total_cpu += sum(cpu)
        endpoints[key] = {
            "count": len(cpu),
            "cpu_mean_ms": round(1000 * sum(cpu) / len(cpu), 2),
            "cpu_p50_ms": round(1000 * lf.percentile(cpu, 50), 2),
            "cpu_p95_ms": round(1000 * lf.percentile(cpu, 95), 2),
            "wall_mean_ms": round(1000 * sum(meter.wall[key]) / len(cpu), 2),
            "cpu_ms_per_flow": round(1000 * sum(cpu) / args.flows, 2),
            "sql_per_request": round(meter.statements[key] / len(cpu), 1),
            "sql_writes_per_request": round(meter.writes[key] / len(cpu), 1),
        }
    return {
        "config": {"database": "postgresql" if args.database_url else "sqlite", "flows": args.flows,
                   "people": args.people, "source": str(args.source), "commit": lf.source_commit(args.source),
                   "seeded_accounts": args.seed_accounts, "seeded_clients": args.seed_clients},
        "flow_kinds": kinds,
        "sequential_flows_per_s": round(args.flows / elapsed, 2),
        "app_cpu_ms_per_flow": round(1000 * total_cpu / args.flows, 2),
        "sql_per_flow": round(sum(meter.statements.values()) / args.flows, 1),
        "by_flow_kind": {
            kind: {"flows": len(cpu), "app_cpu_ms_per_flow": round(1000 * sum(cpu) / len(cpu), 2),
                   "app_cpu_p50_ms": round(1000 * lf.percentile(sorted(cpu), 50), 2),
                   "sql_per_flow": round(sum(meter.flow_statements[kind]) / len(cpu), 1)}
            for kind, cpu in sorted(meter.flow_cpu.items())
        },
        "endpoints": endpoints,
    }


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nApp CPU per request, {cfg['flows']} sequential flows ({cfg['database']}; "
          f"{', '.join(f'{k} {v}' for k, v in sorted(report['flow_kinds'].items()))})")
    print(f"  {'endpoint':<24}{'count':>6}{'cpu mean':>10}{'p50':>8}{'p95':>8}{'wall':>8}{'per flow':>10}"
          f"{'SQL/req':>9}{'writes':>8}")
    for key, e in report["endpoints"].items():
        print(f"  {key:<24}{e['count']:>6}{e['cpu_mean_ms']:>10.2f}{e['cpu_p50_ms']:>8.2f}{e['cpu_p95_ms']:>8.2f}"
              f"{e['wall_mean_ms']:>8.2f}{e['cpu_ms_per_flow']:>10.2f}{e['sql_per_request']:>9.1f}"
              f"{e['sql_writes_per_request']:>8.1f}")
    print("  (times in ms; SQL/req counts statements sent to the database, writes the INSERT/UPDATE/DELETE)")
    print(f"  app CPU per flow: {report['app_cpu_ms_per_flow']:.1f} ms, {report['sql_per_flow']:.0f} SQL statements; "
          f"{report['sequential_flows_per_s']:.1f} sequential flows/s (driver included)")
    for kind, figures in report["by_flow_kind"].items():
        label = "remembered-consent login" if kind == "login" else kind
        print(f"  per {label} ({figures['flows']} flows): {figures['app_cpu_ms_per_flow']:.1f} ms app CPU "
              f"(p50 {figures['app_cpu_p50_ms']:.1f}), {figures['sql_per_flow']:.0f} SQL statements")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        lf.log("interrupted")
        sys.exit(130)
