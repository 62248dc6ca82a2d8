"""A short run of the generated-input fuzz (tests/fuzz/run.py; ``make fuzz`` runs the long
one): Schemathesis over /openapi.json against a real ``idp serve`` finds no 5xx and no
traceback in the server log."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import RunningIdP
from tests.fuzz.run import fuzz


def test_the_openapi_document_describes_the_json_endpoints(idp: RunningIdP) -> None:
    document = requests.get(idp.base_url + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": idp.base_url}]
    for path in ("/enroll/begin", "/enroll/finish", "/enroll/activate", "/login/options", "/login/assertion",
                 "/account/login/options", "/account/login/assertion", "/register", "/par", "/token", "/revoke",
                 "/introspect"):
        assert path in document["paths"], path


def test_fuzz_smoke(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    result = fuzz(tmp_path, examples=8, max_time=12)
    print(result.line())
    assert result.requests >= 50, result.line()
    assert result.passed, result.line()
