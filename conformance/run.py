"""``python -m conformance.run``: start an IdP (or use ``--issuer``), run the modules, print
a PASSED / FAILED / WARNING table like the official suite, then ``N passed, N failed``
(a WARNING counts as passed, as in the suite); exit 1 on any failure."""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from conformance import modules  # noqa: F401  (registers the modules)
from conformance.client import Person
from conformance.environment import Environment, Options
from conformance.framework import REGISTRY, ModuleSpec, Outcome, Status, execute
from conformance.modules.common import BACKCHANNEL, BASIC, CONFIG, DYNAMIC, EXTRA, LOGOUT
from conformance.modules.fapi2 import FAPI2, FAPI2_MS
from tests.support.rp import discover
from tests.support.rp_host import RpHost

PLAN_ORDER = (BASIC, CONFIG, DYNAMIC, LOGOUT, BACKCHANNEL, FAPI2, FAPI2_MS, EXTRA)
# Started first so their waits overlap the rest.
SLOW_FIRST = ("oidcc-codereuse-30seconds", "oidcc-refresh-token-rp-key-rotation", "oidcc-server-rotate-keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.run", description=__doc__)
    parser.add_argument("--server", choices=("inprocess", "gunicorn"), default="inprocess",
                        help="how to start the IdP under test (ignored with --issuer)")
    parser.add_argument("--issuer", help="test a running deployment instead (see README: it must trust --jpki-ca)")
    parser.add_argument("--jpki-ca", type=Path, help="folder with ca.pem and ca.key.pem of a TEST JPKI CA the "
                        "deployment trusts (e.g. keys/jpki-test of a development deployment)")
    parser.add_argument("--registration-token", help="initial access token for POST /register (IDP_REGISTRATION_TOKEN)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only modules whose name matches (fnmatch; repeatable)")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("--workers", type=int, default=8, help="modules run in parallel (default 8)")
    parser.add_argument("--code-reuse-wait", type=float, default=30.0,
                        help="seconds oidcc-codereuse-30seconds waits (official: 30)")
    parser.add_argument("--jwks-refresh-wait", type=float, default=11.0,
                        help="seconds oidcc-refresh-token-rp-key-rotation waits after rotating the RP key")
    parser.add_argument("--category", default="municipal", help="rp_category sent at registration")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every finding and note")
    return parser


def selected(patterns: Sequence[str]) -> list[ModuleSpec]:
    specs = [s for s in REGISTRY if not patterns or any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    return sorted(specs, key=lambda s: (s.name not in SLOW_FIRST, 0))


def run_modules(env: Environment, specs: Sequence[ModuleSpec], workers: int) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="module") as pool:
        futures = [pool.submit(execute, spec, env) for spec in specs]
        outcomes = [f.result() for f in futures]
    plans = list(dict.fromkeys(PLAN_ORDER + tuple(s.plan for s in REGISTRY)))
    order = {id(spec): i for i, spec in enumerate(REGISTRY)}
    return sorted(outcomes, key=lambda o: (plans.index(o.spec.plan), order.get(id(o.spec), 0)))


def render(outcomes: Sequence[Outcome], *, verbose: bool = False) -> str:
    width = max([len(o.spec.label) for o in outcomes] + [6])
    lines, plan = [], None
    for outcome in outcomes:
        if outcome.spec.plan != plan:
            plan = outcome.spec.plan
            lines.append(f"\n{plan}")
            lines.append(f"  {'module':<{width}}  result   seconds")
        lines.append(f"  {outcome.spec.label:<{width}}  {outcome.status.value:<7}  {outcome.seconds:6.1f}")
        shown = outcome.findings if verbose or outcome.status is not Status.PASSED else []
        for finding in shown:
            lines.append(f"      {finding}")
        if verbose:
            lines.extend(f"      note: {n}" for n in outcome.notes)
    failed = sum(o.status is Status.FAILED for o in outcomes)
    lines.append("")
    lines.append(f"{len(outcomes) - failed} passed, {failed} failed")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> tuple[list[Outcome], str]:
    args = build_parser().parse_args(argv)
    specs = selected(args.only)
    from conformance import harness
    from idp.proofing.demo_card import TestJpkiCA

    deployment = None
    if args.issuer:
        if not args.jpki_ca:
            raise SystemExit("--issuer needs --jpki-ca: the person proves who they are with a TEST JPKI card")
        issuer, jpki_ca, rotate, age_codes = args.issuer.rstrip("/"), TestJpkiCA.load(args.jpki_ca), None, None
    else:
        deployment = harness.start(args.server)
        issuer, jpki_ca, rotate = deployment.issuer, deployment.jpki_ca, deployment.rotate_keys
        age_codes = deployment.age_codes
    rp_host = RpHost().start()
    try:
        provider = discover(issuer, requests.Session())
        env = Environment(issuer=issuer, provider=provider, person=Person(issuer, jpki_ca.issue_card()),
                          rp_host=rp_host, rotate_keys=rotate, age_codes=age_codes,
                          registration_token=args.registration_token,
                          options=Options(code_reuse_wait=args.code_reuse_wait,
                                          jwks_refresh_wait=args.jwks_refresh_wait, category=args.category))
        started = time.monotonic()
        outcomes = run_modules(env, specs, args.workers)
        report = render(outcomes, verbose=args.verbose)
        report = f"OP under test: {issuer} ({time.monotonic() - started:.1f} s)" + report
    finally:
        rp_host.stop()
        if deployment is not None:
            deployment.stop()
    return outcomes, report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for spec in selected(args.only):
            print(f"{spec.plan:<60} {spec.label}")
        return 0
    outcomes, report = run(argv)
    print(report)
    return 1 if any(o.status is Status.FAILED for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
