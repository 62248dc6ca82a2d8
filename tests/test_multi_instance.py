"""Two `idp serve` instances of one deployment (one database, one Redis, one keys folder)
behind a round-robin balancer without sticky sessions: every request of a login goes to the
other instance than the one before, for a same-device and a cross-device login; lock-out and
rate limits hold across them; keys rotated from one machine (each instance with its own copy
of the keys folder) are published by both before any token is signed with them, and both
sign with them after the grace period."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto.jwk import JWKSet

from tests.support.balancer import Deployment, RoundRobin, redis_url, two_instances
from tests.support.lifecycle import attempt_login, card, login, refused, rp
from tests.support.rp import IdTokenError, _verified_payload, browser_login
from tests.support.server import ServedIdP, command_env, free_port, idp_command, serve_idp

LIMIT = 100
FAILURES_BEFORE_LOCK = 5


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, jpki_ca) -> Iterator[Deployment]:
    env = {"IDP_RATE_LIMIT_PER_MINUTE": LIMIT} if redis_url() else {}
    with two_instances(tmp_path_factory.mktemp("two-instances"), jpki_ca, env=env) as running:
        yield running


def test_same_device_login_with_every_request_on_the_other_instance(deployment):
    front = deployment.front
    client = rp(front)
    phone = front.wallet().enroll(card(front))
    mark = len(deployment.balancer.paths)
    result = login(front, client, phone)
    info = client.userinfo(result.access_token)
    assert info["sub"] == result.claims["sub"]
    steps = deployment.balancer.paths[mark:]
    paths = {path for path, _ in steps}
    assert {"/authorize", "/login", "/login/options", "/login/assertion", "/consent", "/token",
            "/userinfo"} <= paths, paths
    assert deployment.served_by(mark) == {i.port for i in deployment.instances}


def test_cross_device_login_across_instances(deployment):
    front = deployment.front
    client = rp(front)
    phone = front.wallet().enroll(card(front))
    mark = len(deployment.balancer.paths)
    with requests.Session() as browser:
        location = client.start(browser)
        callback = browser_login(browser, front.base_url, location, front.wallet(), phone, same_device=False)
        result = client.finish(callback)
    assert result.claims["sub"] and client.userinfo(result.access_token)["sub"] == result.claims["sub"]
    assert "/login/status" in {path for path, _ in deployment.balancer.paths[mark:]}
    assert deployment.served_by(mark) == {i.port for i in deployment.instances}


def test_lock_out_holds_across_instances(deployment):
    front = deployment.front
    client = rp(front)
    phone = front.wallet().enroll(card(front))
    wrong = ec.generate_private_key(ec.SECP256R1())
    for _ in range(FAILURES_BEFORE_LOCK):
        refused(attempt_login(front, client, phone, sign_with=wrong), "bad_signature")
    for _ in range(2):  # whichever instance answers, the credential is locked
        refused(attempt_login(front, client, phone), "credential_locked", status=423)


def test_rate_limit_is_shared_by_both_instances(deployment):
    if not deployment.redis:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379: shared rate limits not tested")
    url = deployment.front.base_url + "/enroll/activate"  # the activation group: a budget of its own
    answers = [requests.post(url, json={}, timeout=10) for _ in range(LIMIT + 4)]
    allowed = sum(answer.status_code != 429 for answer in answers)
    assert allowed <= LIMIT  # one budget: two instances with two workers each counting alone would allow 4x
    limited = {int(a.headers["X-Served-By"]) for a in answers if a.status_code == 429}
    assert limited == {i.port for i in deployment.instances}


GRACE = 4  # seconds; the instances re-read the key schedule every second (IDP_KEYS_REFRESH_SECONDS=1)


@dataclasses.dataclass
class Issued:
    started: float  # when the login began: its token was signed later
    finished: float  # when the RP had the token: it was signed earlier
    kid: str
    backend: int  # the instance that answered /token


def test_rotation_on_one_machine_is_published_by_both_before_either_signs_with_it(tmp_path, jpki_ca):
    """Instance B runs on its own copy of A's keys folder (as on another machine); logins run
    continuously through the balancer while `idp keys rotate` runs with A's environment.
    After each login the RP fetches the JWKS through the balancer and verifies the ID token
    with it: zero failures. After the grace period (plus one re-read) both instances sign
    with the new keys, which B could only get from the database."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with serve_idp(tmp_path / "a", jpki_ca, issuer=issuer) as a:
        copy = tmp_path / "b-keys"
        shutil.copytree(a.keys_dir, copy)
        with serve_idp(tmp_path / "b", jpki_ca, issuer=issuer, share=a, env={"IDP_KEYS_DIR": str(copy)}) as b, \
                RoundRobin(port, [a.port, b.port]) as balancer:
            front = dataclasses.replace(a, base_url=issuer, port=port)
            issued, failures, (began, committed), new = _logins_through_a_rotation(front, balancer, a)
    assert failures == [], failures
    assert len(new) == 2  # one new key per algorithm
    # Whole seconds on the schedule: a key signs from int(now) + GRACE of the rotation, so
    # never before began + GRACE - 1, and from committed + GRACE on; one re-read later both
    # instances have it.
    assert not any(token.kid in new for token in issued if token.finished < began + GRACE - 1)
    after = [token for token in issued if token.started >= committed + GRACE + 1.5]
    assert {token.backend for token in after} == {a.port, b.port}, "too few logins after the grace period"
    assert all(token.kid in new for token in after), [(t.backend, t.kid in new) for t in after]


def _logins_through_a_rotation(front: ServedIdP, balancer: RoundRobin, a: ServedIdP
                               ) -> tuple[list[Issued], list[str], tuple[float, float], set[str]]:
    client = rp(front)
    phone = front.wallet().enroll(card(front))
    before = {key["kid"] for key in requests.get(front.url("/jwks"), timeout=10).json()["keys"]}
    stop = threading.Event()
    issued: list[Issued] = []
    failures: list[str] = []

    def logins() -> None:
        while not stop.is_set():
            started = time.time()
            try:
                result = login(front, client, phone)
                finished = time.time()
            except IdTokenError as exc:  # the RP's own check (its cached JWKS, refetched on a miss)
                failures.append(f"RP validation: {exc}")
                continue
            backend = next(port for path, port in reversed(balancer.paths) if path == "/token")
            jwks = JWKSet.from_json(requests.get(front.url("/jwks"), timeout=10).text)  # what an RP fetches now
            try:
                header, _ = _verified_payload(result.id_token, jwks, ["ES256", "RS256"])
            except IdTokenError as exc:
                failures.append(f"{header_kid(result.id_token)} from {backend}: {exc}")
                continue
            issued.append(Issued(started, finished, header["kid"], backend))
            if len(issued) % 2:  # one request more every other round: /token alternates instances
                requests.get(front.url("/.well-known/openid-configuration"), timeout=10)

    runner = threading.Thread(target=logins)
    runner.start()
    try:
        time.sleep(2)
        began = time.time()
        rotated = subprocess.run(idp_command("keys", "rotate", "--grace", str(GRACE)), env=command_env(a.env),
                                 capture_output=True, text=True, timeout=60)
        committed = time.time()
        assert rotated.returncode == 0, rotated.stderr
        time.sleep(GRACE + 8)
    finally:
        stop.set()
        runner.join(60)
    after = {key["kid"] for key in requests.get(front.url("/jwks"), timeout=10).json()["keys"]}
    return issued, failures, (began, committed), after - before


def header_kid(token: str) -> str:
    import base64
    import json

    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")).get("kid"))
