"""Prometheus metrics (README "Operations"): /metrics parses with the Prometheus text parser,
counters move by exactly one for one login, and the endpoint answers only loopback or the
metrics token (else 404)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from idp.proofing.demo_card import TestJpkiCA
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import attempt_login, card, login, rp

TOKEN = "metrics-token-for-tests-0123456789"
REMOTE = {"X-Forwarded-For": "203.0.113.9"}  # behind one trusted proxy: a non-loopback client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("metrics-idp"), jpki_ca,
                         env={"IDP_METRICS_TOKEN": TOKEN, "IDP_PROXY_HOPS": "1"})


def scrape(server: RunningIdP) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(server.base_url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_include_the_documented_families(server):
    requests.get(server.base_url + "/.well-known/openid-configuration", timeout=10)
    samples = scrape(server)
    names = {name for name, _ in samples}
    assert "idp_request_duration_seconds_bucket" in names
    assert value(samples, "idp_request_duration_seconds_count", endpoint="oidc.discovery", method="GET") >= 1 or \
        any(name == "idp_request_duration_seconds_count" and dict(labels).get("method") == "GET"
            for name, labels in samples)
    assert "idp_db_pool_connections_in_use" in names



def test_invented_methods_share_one_label(server):
    """A label per method a client makes up would grow the metrics without end."""
    for method in ("BREW", "WHEN", "PROPFIND"):
        requests.request(method, server.base_url + "/nowhere", timeout=10)
    samples = scrape(server)
    methods = {dict(labels).get("method") for name, labels in samples if name == "idp_request_duration_seconds_count"}
    assert "other" in methods and not methods & {"BREW", "WHEN", "PROPFIND"}

def test_one_login_moves_each_counter_by_exactly_one(server):
    client = rp(server)
    phone_before = scrape(server)
    phone = server.wallet().enroll(card(server))
    enrolled = scrape(server)
    for step in ("finish", "activate"):
        assert value(enrolled, "idp_enrolments_total", step=step, outcome="success", reason="") - \
            value(phone_before, "idp_enrolments_total", step=step, outcome="success", reason="") == 1
    login(server, client, phone)
    after = scrape(server)
    assert value(after, "idp_logins_total", outcome="success", reason="") - \
        value(enrolled, "idp_logins_total", outcome="success", reason="") == 1
    assert value(after, "idp_tokens_issued_total", grant="authorization_code", category="municipal") - \
        value(enrolled, "idp_tokens_issued_total", grant="authorization_code", category="municipal") == 1
    failed = attempt_login(server, client, phone, sign_with=ec.generate_private_key(ec.SECP256R1()))
    refused = scrape(server)
    assert value(refused, "idp_logins_total", outcome="failure", reason=failed.error) - \
        value(after, "idp_logins_total", outcome="failure", reason=failed.error) == 1
    assert value(refused, "idp_logins_total", outcome="success", reason="") == \
        value(after, "idp_logins_total", outcome="success", reason="")


def test_a_retried_enrolment_finish_counts_as_repeated_not_as_a_second_success(server):
    wallet = server.wallet()
    body = wallet.finish_body(wallet.begin(), card(server), wallet.new_authenticator())
    before = scrape(server)
    assert wallet.post("/enroll/finish", body).status_code == 201
    assert wallet.post("/enroll/finish", body).status_code == 201
    after = scrape(server)
    for outcome in ("success", "repeated"):
        assert value(after, "idp_enrolments_total", step="finish", outcome=outcome, reason="") - \
            value(before, "idp_enrolments_total", step="finish", outcome=outcome, reason="") == 1


def test_metrics_are_hidden_from_other_clients_without_the_token(server):
    url = server.base_url + "/metrics"
    assert requests.get(url, headers=REMOTE, timeout=10).status_code == 404
    wrong = requests.get(url, headers={**REMOTE, "Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 404 and wrong.json()["error"] == "not_found"
    allowed = requests.get(url, headers={**REMOTE, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert allowed.status_code == 200 and "idp_logins_total" in allowed.text


def test_rate_limit_refusals_are_counted(tmp_path, jpki_ca):
    generator = start_idp(tmp_path, jpki_ca, env={"IDP_RATE_LIMIT_PER_MINUTE": "1"})
    limited = next(generator)
    try:
        before = value(scrape(limited), "idp_rate_limit_refusals_total", group="enrollment")
        statuses = [requests.post(limited.base_url + "/enroll/begin", json={}, timeout=10).status_code
                    for _ in range(2)]
        assert statuses == [200, 429]
        assert value(scrape(limited), "idp_rate_limit_refusals_total", group="enrollment") - before == 1
    finally:
        generator.close()
