"""A real `idp serve` (gunicorn, two workers): readiness, metrics summed over the workers
(multiprocess mode), and a bounded graceful stop on SIGTERM."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from idp.ops.serving import GRACEFUL_TIMEOUT
from tests.support.server import serve_idp


def healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "idp_request_duration_seconds_count" and sample.labels.get("endpoint") == "ops.healthz":
                return sample.value
    return 0.0


def test_serve_is_ready_sums_metrics_over_workers_and_stops_gracefully(tmp_path, jpki_ca):
    with serve_idp(tmp_path, jpki_ca, workers=2) as server:
        assert requests.get(server.url("/readyz"), timeout=10).status_code == 200
        before = healthz_count(requests.get(server.url("/metrics"), timeout=10).text)
        for _ in range(12):  # new connections: gunicorn spreads them over both workers
            assert requests.get(server.url("/healthz"), timeout=10, headers={"Connection": "close"}).ok
        after = healthz_count(requests.get(server.url("/metrics"), timeout=10).text)
        assert after - before == 12
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < GRACEFUL_TIMEOUT + 5
        assert "Traceback" not in server.log()
