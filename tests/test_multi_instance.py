"""Two `idp serve` instances of one deployment (one database, one Redis, one keys folder)
behind a round-robin balancer without sticky sessions: every request of a login goes to the
other instance than the one before, for a same-device and a cross-device login; lock-out and
rate limits hold across them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.balancer import Deployment, redis_url, two_instances
from tests.support.lifecycle import attempt_login, card, login, refused, rp
from tests.support.rp import browser_login

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
