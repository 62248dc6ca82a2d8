#!/usr/bin/env python3
"""Old against new in one run: ``login_flow.py`` rounds alternating between two snapshots.

On a shared machine the load of other processes drifts over minutes; alternating short
rounds of the two commits (A B A B …) exposes both to the same drift, and the medians of
their rounds compare fairly. Each snapshot is a ``git archive`` of its commit, served by
this checkout's virtual environment.

    .venv/bin/python bench/compare.py 84a30e1 HEAD                       # SQLite, 2 rounds each
    .venv/bin/python bench/compare.py 84a30e1 HEAD --rounds 3 -- --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

With ``--cost`` the rounds are ``endpoint_cost.py`` runs instead: app CPU per login,
in-process and one flow at a time, which other load disturbs far less than throughput. On a
machine whose speed changes from day to day, the ratio to a fixed commit is what carries
from one day to the next (bench/README.md, issue 11):

    .venv/bin/python bench/compare.py 84a30e1 HEAD --cost --rounds 3 -- --flows 300

Arguments after ``--`` go to every round (``--duration``, ``--workers``, ``--flows``…).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def snapshot(commit: str, folder: Path) -> Path:
    """The commit's tree in ``folder``/<commit> with a COMMIT file (what login_flow.py reports)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    target = folder / sha[:12]
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "COMMIT").write_text(sha + "\n")
    return target


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the commit to compare against (e.g. 84a30e1)")
    parser.add_argument("new", help="the commit under test (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per commit, alternating")
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument("--cost", action="store_true",
                        help="rounds of endpoint_cost.py (app CPU per login) instead of login_flow.py")
    args = parser.parse_args(argv)
    script, figures, verdict = (("endpoint_cost.py", cost_figures, cost_verdict) if args.cost
                                else ("login_flow.py", flow_figures, flow_verdict))
    folder = Path(tempfile.mkdtemp(prefix="idp-compare-"))
    rounds: dict[str, list[dict]] = {"old": [], "new": []}
    try:
        sources = {"old": snapshot(args.old, folder / "old"), "new": snapshot(args.new, folder / "new")}
        for number in range(args.rounds):
            for label in ("old", "new"):
                out = folder / f"{label}-{number}.json"
                command = [sys.executable, str(ROOT / "bench" / script), "--source", str(sources[label]),
                           "--json", str(out), *extra]
                print(f"round {number + 1}/{args.rounds}: {label} ({sources[label].name})", file=sys.stderr, flush=True)
                done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if not out.exists():  # a run with failed flows still reports (and exits non-zero)
                    print(done.stderr[-3000:], file=sys.stderr)
                    return done.returncode or 1
                rounds[label].append(json.loads(out.read_text()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(rounds, figures, verdict)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    return 0


def flow_figures(report: dict) -> dict[str, float]:
    summary, memory, cpu = report["summary"], report["memory"], report["cpu"]
    return {
        "flows_per_s": summary["flows_per_s"], "p50_ms": summary["flow"]["p50_ms"],
        "p95_ms": summary["flow"]["p95_ms"], "p99_ms": summary["flow"]["p99_ms"], "errors": summary["errors"],
        "server_ms_per_flow": cpu["server_ms_per_flow"], "driver_ms_per_flow": cpu["driver_ms_per_flow"],
        "max_worker_rss_mib": max((memory.get("peak") or memory["end"])["per_worker_rss_mib"]),
        "others_cpu_s": cpu["others_s"],
    }


def flow_verdict(old: dict[str, float], new: dict[str, float]) -> str:
    ratio = new["flows_per_s"] / old["flows_per_s"] if old["flows_per_s"] else None
    return f"throughput new/old: {ratio:.2f}x" if ratio else "throughput new/old: n/a"


def cost_figures(report: dict) -> dict[str, float]:
    """The remembered-consent login (``login``), which issue 11's targets are about."""
    login = report["by_flow_kind"]["login"]
    return {"login_cpu_ms": login["app_cpu_ms_per_flow"], "login_cpu_p50_ms": login["app_cpu_p50_ms"],
            "login_sql": login["sql_per_flow"], "flow_cpu_ms": report["app_cpu_ms_per_flow"]}


def cost_verdict(old: dict[str, float], new: dict[str, float]) -> str:
    ratio = new["login_cpu_ms"] / old["login_cpu_ms"]
    return f"app CPU per login new/old: {ratio:.3f} ({1 / ratio:.2f}x less)"


def print_table(rounds: dict[str, list[dict]], figures: Callable[[dict], dict[str, float]],
                verdict: Callable[[dict[str, float], dict[str, float]], str]) -> None:
    names = list(figures(rounds["old"][0]))
    print(f"{'commit':<8}{'round':>6}" + "".join(f"{name:>20}" for name in names))
    for label in ("old", "new"):
        for number, report in enumerate(rounds[label], 1):
            values = figures(report)
            print(f"{label:<8}{number:>6}" + "".join(f"{values[name]:>20.1f}" for name in names))
    medians = {label: {name: statistics.median(figures(r)[name] for r in rounds[label]) for name in names}
               for label in ("old", "new")}
    for label in ("old", "new"):
        print(f"{label:<8}{'median':>6}" + "".join(f"{medians[label][name]:>20.1f}" for name in names))
    print(verdict(medians["old"], medians["new"]))


if __name__ == "__main__":
    sys.exit(main())
