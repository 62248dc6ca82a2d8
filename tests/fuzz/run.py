"""Generated input at scale: Schemathesis drives the IdP's own OpenAPI document
(``/openapi.json``) against a real multi-worker ``idp serve`` and counts every request.

    python -m tests.fuzz.run                           # make fuzz (both databases)
    IDP_TEST_DATABASE_URL=postgresql+psycopg://... python -m tests.fuzz.run

Passes when no answer is 5xx, the server log holds no traceback and at least
``--minimum`` requests were sent. The requests come from Schemathesis's schema-driven
generation (Hypothesis): valid, boundary and invalid values for every documented field,
with and without the client's Basic credentials.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from idp.proofing.demo_card import TestJpkiCA
from tests.support.server import serve_idp

STATUS = re.compile(r"^\s+code: '?(\d{3})'?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class FuzzResult:
    database: str
    requests: int
    server_errors: int
    tracebacks: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.requests > 0 and self.server_errors == 0 and self.tracebacks == 0

    def line(self) -> str:
        return (f"fuzz {self.database}: {self.requests} requests, {self.server_errors} answers >= 500, "
                f"{self.tracebacks} tracebacks in the server log, {self.seconds:.0f} s")


def _client(base_url: str) -> tuple[str, str]:
    """A confidential client whose Basic credentials reach the client-authenticated endpoints."""
    answer = requests.post(base_url + "/register", timeout=10, json={
        "rp_category": "municipal", "redirect_uris": ["http://127.0.0.1:9/cb"],
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["authorization_code"]}).json()
    return answer["client_id"], answer["client_secret"]


def fuzz(tmp: Path, *, examples: int, seed: int = 1, workers: int = 2, max_time: int | None = None) -> FuzzResult:
    database = "postgresql" if "IDP_TEST_DATABASE_URL" in __import__("os").environ else "sqlite"
    cassette = tmp / "cassette.yaml"
    started = time.monotonic()
    with serve_idp(tmp / "server", TestJpkiCA.create(), workers=workers) as server:
        client_id, secret = _client(server.base_url)
        command = [sys.executable, "-m", "schemathesis.cli", "run", server.url("/openapi.json"),
                   "--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", str(seed),
                   "--workers", str(workers), "--no-shrink", "--report", "vcr", "--report-vcr-path", str(cassette),
                   "--request-timeout", "10", "--suppress-health-check", "all", "--warnings", "off",
                   "--phases", "examples,coverage,fuzzing", "--continue-on-failure"]
        if max_time:
            command += ["--max-time", str(max_time)]
        for auth in (None, f"{client_id}:{secret}"):
            run = command + (["--auth", auth, "--report-vcr-path", str(tmp / "cassette-auth.yaml")] if auth else [])
            subprocess.run(run, cwd=tmp, stdout=sys.stdout if __name__ == "__main__" else subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, check=False)
        log = server.log()
    statuses = [int(code) for path in (cassette, tmp / "cassette-auth.yaml") if path.exists()
                for code in STATUS.findall(path.read_text(encoding="utf-8", errors="replace"))]
    return FuzzResult(database=database, requests=len(statuses), server_errors=sum(s >= 500 for s in statuses),
                      tracebacks=log.count("Traceback"), seconds=time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="generated examples per operation and run")
    parser.add_argument("--minimum", type=int, default=10_000, help="requests the run must reach")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idp-fuzz-") as tmp:
        result = fuzz(Path(tmp), examples=args.examples, seed=args.seed)
    print(result.line())
    if result.requests < args.minimum:
        print(f"fuzz: fewer than {args.minimum} requests were sent", file=sys.stderr)
        return 1
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
