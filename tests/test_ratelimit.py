"""Per-client-address rate limits on the enrolment, activation and login groups
(PROTOCOL §1, issue 4 item 6): 429 with Retry-After beyond the limit, groups counted
separately, and shared between instances through Redis."""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from idp.proofing.demo_card import TestJpkiCA
from tests.conftest import RunningIdP, start_idp

LIMIT = 3
REDIS = ("127.0.0.1", 6379)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("limited"), jpki_ca, env={"IDP_RATE_LIMIT_PER_MINUTE": str(LIMIT)})


def post(server: RunningIdP, path: str, body: dict | None = None) -> requests.Response:
    return requests.post(server.base_url + path, json=body or {}, timeout=10)


def assert_limited(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    assert response.json()["error_description"]
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_each_group_is_limited_separately(limited):
    for _ in range(LIMIT):
        assert post(limited, "/enroll/begin").status_code == 200
    assert_limited(post(limited, "/enroll/begin"))
    assert_limited(post(limited, "/enroll/finish", {"enrollment_id": "x"}))  # same group: enrolment
    # the activation and login groups have their own budgets
    for _ in range(LIMIT):
        assert post(limited, "/enroll/activate", {"enrollment_id": "x"}).status_code == 404
    assert_limited(post(limited, "/enroll/activate", {"enrollment_id": "x"}))
    for path in ("/login/options", "/login/assertion", "/login/options"):
        assert post(limited, path, {"txn": "x"}).status_code == 404
    assert_limited(post(limited, "/login/assertion", {"txn": "x"}))
    # other endpoints are not limited by these groups
    for _ in range(LIMIT + 2):
        assert requests.get(limited.base_url + "/.well-known/openid-configuration", timeout=10).status_code == 200


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


def test_redis_storage_is_shared_between_instances(tmp_path, jpki_ca):
    if not _redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379: shared rate-limit storage not tested")
    # two instances of one deployment (same issuer, same storage) share the counters; a
    # fresh issuer per run keeps earlier runs' counters (same Redis, same minute) apart
    issuer = f"http://127.0.0.1:{random.randint(20000, 60000)}/{uuid.uuid4().hex[:8]}"
    env = {"IDP_RATE_LIMIT_PER_MINUTE": str(LIMIT), "IDP_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379",
           "IDP_ISSUER": issuer}
    generators = [start_idp(tmp_path / name, jpki_ca, env=env) for name in ("a", "b", "other")]
    first, second = next(generators[0]), next(generators[1])
    try:
        assert post(first, "/enroll/begin").status_code == 200
        assert post(second, "/enroll/begin").status_code == 200
        assert post(first, "/enroll/begin").status_code == 200
        assert_limited(post(second, "/enroll/begin"))
        assert_limited(post(first, "/enroll/begin"))
        # another deployment on the same Redis keeps its own counters
        generators[2].close()
        generators[2] = start_idp(tmp_path / "other2", jpki_ca, env={**env, "IDP_ISSUER": issuer + "x"})
        other = next(generators[2])
        assert post(other, "/enroll/begin").status_code == 200
    finally:
        for generator in generators:
            generator.close()


def test_unreachable_shared_storage_fails_closed_for_limited_endpoints_only(tmp_path, jpki_ca):
    """A Redis outage refuses the rate-limited endpoints with a clear 503 (never per-process
    counters, never a 500) and leaves the rest of the IdP answering."""
    env = {"IDP_RATE_LIMIT_PER_MINUTE": str(LIMIT), "IDP_REDIS_URL": "redis://127.0.0.1:1"}
    generator = start_idp(tmp_path, jpki_ca, env=env)
    server = next(generator)
    try:
        started = time.monotonic()
        refused = post(server, "/enroll/begin")
        assert time.monotonic() - started < 10  # bounded waits, not a stall
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        body = refused.json()
        assert body["error"] == "temporarily_unavailable" and "rate limiting" in body["error_description"]
        assert requests.get(server.base_url + "/.well-known/openid-configuration", timeout=10).status_code == 200
        assert requests.get(server.base_url + "/healthz", timeout=10).status_code == 200
    finally:
        generator.close()


def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(tmp_path_factory, jpki_ca):
    """IDP_PROXY_HOPS=1: the limit counts X-Forwarded-For, not the proxy's own address."""
    import requests

    from tests.conftest import start_idp

    servers = start_idp(tmp_path_factory.mktemp("proxied-idp"), jpki_ca,
                        env={"IDP_RATE_LIMIT_PER_MINUTE": "2", "IDP_PROXY_HOPS": "1"})
    server = next(servers)
    try:
        def begin(address: str) -> int:
            return requests.post(f"{server.base_url}/enroll/begin", json={}, timeout=10,
                                 headers={"X-Forwarded-For": address}).status_code

        assert [begin("203.0.113.1") for _ in range(3)] == [200, 200, 429]
        assert begin("203.0.113.2") == 200  # another client behind the same proxy
    finally:
        servers.close()


def test_authorization_transactions_are_limited_per_address(limited):
    """Each /authorize (or /par) may store a transaction, unauthenticated: its own group,
    FACTORS times the per-minute budget."""
    from idp.web.ratelimit import FACTORS

    query = {"client_id": "unknown", "response_type": "code"}
    for _ in range(LIMIT * FACTORS["authorization"]):
        response = requests.get(limited.base_url + "/authorize", params=query, timeout=10, allow_redirects=False)
        assert response.status_code == 400
    response = requests.get(limited.base_url + "/authorize", params=query, timeout=10, allow_redirects=False)
    assert response.status_code == 429 and 0 < int(response.headers["Retry-After"]) <= 60
    assert_limited(requests.post(limited.base_url + "/par", data={"client_id": "x"}, timeout=10))
