"""The person's phone for the official OpenID conformance suite's browser automation.

The suite drives HtmlUnit, which cannot use a WebAuthn passkey, so the configs in this
folder sign in *cross-device* (PROTOCOL §4.5): the suite's browser opens ``/login?txn=…``
and waits on it while the page polls ``/login/status``; this process plays the phone. It
enrols one device with a TEST My Number Card (the deployment must trust that TEST JPKI CA,
as a development deployment does: ``keys/jpki-test``), then watches the suite's test logs
(``GET /api/runner/running``, ``GET /api/log/{id}``) for the browser's visits to the login
page and approves each transaction once (``POST /login/options``, ``POST /login/assertion``
with the phone's own HTTP session, exactly as the wallet app does).

    python -m conformance.official.phone --issuer https://id.example.jp \\
        --suite https://localhost.emobix.co.uk:8443 --jpki-ca keys/jpki-test [--suite-token T]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from idp.proofing.demo_card import TestJpkiCA
from tests.support.wallet import Enrolled, Wallet, WalletError


def login_transactions(entries: Iterable[dict[str, Any]], issuer: str) -> set[str]:
    """Transaction ids of login pages the suite's browser reported (WebRunner log entries)."""
    found = set()
    login = issuer.rstrip("/") + "/login"
    for entry in entries:
        url = entry.get("url")
        if isinstance(url, str) and url.split("?")[0] == login:
            txn = dict(parse_qsl(urlsplit(url).query)).get("txn")
            if txn:
                found.add(txn)
    return found


class SuiteLog:
    """Read-only access to the suite's API (the token is a suite API token, when it has one)."""

    def __init__(self, base: str, token: str | None, verify: bool) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.since: dict[str, int] = {}

    def running(self) -> list[str]:
        answer = self.session.get(f"{self.base}/api/runner/running", timeout=10)
        answer.raise_for_status()
        return [str(t) for t in answer.json()]

    def new_entries(self, test_id: str) -> list[dict[str, Any]]:
        params = {"since": self.since[test_id]} if test_id in self.since else {}
        answer = self.session.get(f"{self.base}/api/log/{test_id}", params=params, timeout=10)
        answer.raise_for_status()
        entries = [e for e in answer.json() if isinstance(e, dict)]
        if entries:
            self.since[test_id] = max(int(e.get("time", 0)) for e in entries)
        return entries


def approve(wallet: Wallet, device: Enrolled, txn: str) -> str:
    """Approve one sign-in as the phone (its own session: the browser gets the session)."""
    try:
        return str(wallet.login(txn, authenticator=device).get("status"))
    except WalletError as exc:
        return f"refused ({exc.error})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.official.phone", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--suite", required=True, help="base URL of the conformance suite")
    parser.add_argument("--suite-token", help="API token of the suite (certification.openid.net needs one)")
    parser.add_argument("--jpki-ca", type=Path, required=True, help="folder with the TEST JPKI CA the IdP trusts")
    parser.add_argument("--insecure", action="store_true", help="accept the local suite's self-signed certificate")
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)

    wallet = Wallet(args.issuer)
    device = wallet.enroll(TestJpkiCA.load(args.jpki_ca).issue_card())
    print(f"phone ready: device certificate {device.serial}", flush=True)
    suite = SuiteLog(args.suite, args.suite_token, verify=not args.insecure)
    approved: set[str] = set()
    while True:
        try:
            for test_id in suite.running():
                for txn in login_transactions(suite.new_entries(test_id), args.issuer) - approved:
                    approved.add(txn)
                    print(f"{test_id}: sign-in {txn[:8]}… {approve(wallet, device, txn)}", flush=True)
        except requests.RequestException as exc:
            print(f"suite not reachable: {type(exc).__name__}", file=sys.stderr, flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
