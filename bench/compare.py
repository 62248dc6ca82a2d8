#!/usr/bin/env python3
"""Old against new in one run: ``login_flow.py`` rounds alternating between two snapshots.

On a shared machine the load of other processes drifts over minutes; alternating short
rounds of the two commits (A B A B …) exposes both to the same drift, and the medians of
their rounds compare fairly. Each snapshot is a ``git archive`` of its commit, served by
this checkout's virtual environment.

    .venv/bin/python bench/compare.py 84a30e1 HEAD                       # SQLite, 2 rounds each
    .venv/bin/python bench/compare.py 84a30e1 HEAD --rounds 3 -- --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Arguments after ``--`` go to every ``login_flow.py`` round (``--duration``, ``--workers``…).
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

ROOT = Path(__file__).resolve().parent.parent


def snapshot(commit: str, folder: Path) -> Path:
    """The commit's tree in ``folder`` with a COMMIT file (what login_flow.py reports)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    target = folder / sha[:12]
    target.mkdir()
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
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="idp-compare-"))
    rounds: dict[str, list[dict]] = {"old": [], "new": []}
    try:
        sources = {"old": snapshot(args.old, folder), "new": snapshot(args.new, folder)}
        for number in range(args.rounds):
            for label in ("old", "new"):
                out = folder / f"{label}-{number}.json"
                command = [sys.executable, str(ROOT / "bench" / "login_flow.py"), "--source", str(sources[label]),
                           "--json", str(out), *extra]
                print(f"round {number + 1}/{args.rounds}: {label} ({sources[label].name})", file=sys.stderr, flush=True)
                done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if not out.exists():  # a run with failed flows still reports (and exits non-zero)
                    print(done.stderr[-3000:], file=sys.stderr)
                    return done.returncode or 1
                rounds[label].append(json.loads(out.read_text()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(rounds)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    return 0


def figures(report: dict) -> dict[str, float]:
    summary, memory, cpu = report["summary"], report["memory"], report["cpu"]
    return {
        "flows_per_s": summary["flows_per_s"], "p50_ms": summary["flow"]["p50_ms"],
        "p95_ms": summary["flow"]["p95_ms"], "p99_ms": summary["flow"]["p99_ms"], "errors": summary["errors"],
        "server_ms_per_flow": cpu["server_ms_per_flow"], "driver_ms_per_flow": cpu["driver_ms_per_flow"],
        "max_worker_rss_mib": max((memory.get("peak") or memory["end"])["per_worker_rss_mib"]),
        "others_cpu_s": cpu["others_s"],
    }


def print_table(rounds: dict[str, list[dict]]) -> None:
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
    old, new = medians["old"]["flows_per_s"], medians["new"]["flows_per_s"]
    print(f"throughput new/old: {new / old:.2f}x" if old else "throughput new/old: n/a")


if __name__ == "__main__":
    sys.exit(main())
