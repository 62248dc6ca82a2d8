"""The two benchmark scripts keep working (issue 11): a few flows each, figures checked for
shape and sense, no timing asserted (`make bench` is the real run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.sqlite_only  # each script makes its own deployment; the database is not under test


def _run(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{script}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "BENCH_"))}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_endpoint_cost_smoke(tmp_path: Path) -> None:
    report = _run("endpoint_cost.py", "--flows", "3", "--people", "2", tmp_path=tmp_path)
    assert sum(report["flow_kinds"].values()) == 3
    assert report["app_cpu_ms_per_flow"] > 0 and report["sql_per_flow"] > 0
    assert {"GET /authorize", "GET /login", "POST /login/assertion", "POST /token", "GET /userinfo"} \
        <= set(report["endpoints"])
    kinds = report["by_flow_kind"]
    assert sum(k["flows"] for k in kinds.values()) == 3 and all(k["sql_per_flow"] > 0 for k in kinds.values())


def test_login_flow_smoke(tmp_path: Path) -> None:
    report = _run("login_flow.py", "--flows", "6", "--people", "2", "--concurrency", "2", "--workers", "1",
                  tmp_path=tmp_path)
    summary = report["summary"]
    assert summary["flows"] >= 6 and summary["errors"] == 0, summary
    assert report["server_tracebacks"] == 0
    assert report["memory"]["end"]["workers"] == 1 and report["cpu"]["server_s"] > 0


def test_compare_cost_smoke(tmp_path: Path) -> None:
    """``compare.py --cost``: endpoint_cost.py rounds of two snapshots, alternating."""
    out = tmp_path / "compare.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "BENCH_"))}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "HEAD", "HEAD", "--cost",
                           "--rounds", "1", "--json", str(out), "--", "--flows", "4", "--people", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rounds = json.loads(out.read_text())
    assert [len(rounds["old"]), len(rounds["new"])] == [1, 1]
    assert all(r["by_flow_kind"]["login"]["app_cpu_ms_per_flow"] > 0 for r in rounds["old"] + rounds["new"])
    assert "app CPU per login new/old:" in done.stdout
