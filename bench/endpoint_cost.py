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

from idp import create_app  # noqa: E402
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
        self.trace: list[str] | None = None  # statements of the requests, when tracing

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
                        self.trace.append(f"{key:<24} {' '.join(statement.split())[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", "-k", type=int, default=200, help="sequential flows to measure")
    parser.add_argument("--people", "-m", type=int, default=8, help="enrolled persons (flows rotate over them)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="PostgreSQL server URL (a fresh database is created and dropped); default SQLite")
    parser.add_argument("--source", type=Path, default=lf.ROOT, help="folder whose idp/ package is measured")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile (pstats) of the measured requests here")
    parser.add_argument("--trace-sql", action="store_true",
                        help="print the SQL statements of the last measured flow, by request")
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
            thread.start()
            handle = lf.Server(base_url, None, folder / "none.log", env["IDP_REGISTRATION_TOKEN"], jpki_ca)  # type: ignore[arg-type]
            rps = lf.register_rps(handle)
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
                kinds[client.run_one().kind] += 1
            elapsed = time.perf_counter() - started
            meter.recording = False
            client.close()
            report = build_report(meter, args, dict(kinds), elapsed)
            print_report(report)
            if meter.trace is not None:
                print("\nSQL statements of the last flow:")
                print("\n".join(f"  {line}" for line in meter.trace))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
                lf.log(f"figures written to {args.json}")
            if profiler is not None:
                profiler.dump_stats(str(args.cprofile))
                lf.log(f"cProfile written to {args.cprofile} (python -m pstats {args.cprofile})")
            meter.app.extensions["idp"].db.dispose()
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


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
                   "people": args.people, "source": str(args.source), "commit": lf.source_commit(args.source)},
        "flow_kinds": kinds,
        "sequential_flows_per_s": round(args.flows / elapsed, 2),
        "app_cpu_ms_per_flow": round(1000 * total_cpu / args.flows, 2),
        "sql_per_flow": round(sum(meter.statements.values()) / args.flows, 1),
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        lf.log("interrupted")
        sys.exit(130)
