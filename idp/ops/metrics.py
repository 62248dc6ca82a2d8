"""Prometheus metrics (``prometheus-client``) and the ``/metrics`` exposition.

Under ``idp serve`` every gunicorn worker is its own process: ``idp serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the app is built, each worker then
writes its samples to memory-mapped files there, and ``/metrics`` sums them across
workers (the library's multiprocess mode). Without that variable (tests, a single
process) the default in-process registry is used.

``/metrics`` is answered only to a loopback client (a scraper on the same machine; behind
a proxy, with ``IDP_PROXY_HOPS`` set, the proxy's own address is not the client's) or to a
request with ``Authorization: Bearer $IDP_METRICS_TOKEN``; anyone else gets 404, so the
endpoint does not advertise itself. Labels are bounded sets (endpoint names, error codes,
grant types, categories): never a client id, an account or anything a person typed.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.engine import Engine

from idp.errors import NotFound

LOGINS = Counter("idp_logins", "Login assertions by outcome and reason (error code)", ["outcome", "reason"])
ENROLMENTS = Counter("idp_enrolments", "Enrolment steps (finish, activate) by outcome and reason",
                     ["step", "outcome", "reason"])
TOKENS = Counter("idp_tokens_issued", "Token responses by grant type and RP category", ["grant", "category"])
LOCKOUTS = Counter("idp_lockouts", "Credentials locked after repeated failed assertions")
RATE_LIMITED = Counter("idp_rate_limit_refusals", "Requests refused by a rate limit, by group", ["group"])
FETCH_FAILURES = Counter("idp_outbound_fetch_failures", "Failed fetches of RP-hosted documents", ["reason"])
LATENCY = Histogram("idp_request_duration_seconds", "Request latency by endpoint", ["endpoint", "method"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
DB_CONNECTIONS = Gauge("idp_db_pool_connections_in_use", "Database connections checked out of the pool",
                       multiprocess_mode="livesum")

LOGIN_ENDPOINTS = frozenset({"login.assertion", "account.login_assertion"})
ENROLMENT_ENDPOINTS = {"enroll.finish": "finish", "enroll.activate": "activate"}
# Any token is a method to HTTP: one label per method a client invents would grow without end
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KNOWN_GRANTS = frozenset({"authorization_code", "refresh_token", "client_credentials"})
_CATEGORY_KEY = "_metrics_token_category"
_REPEATED_KEY = "_metrics_step_repeated"


def token_issued(category: str) -> None:
    """Called where a token is saved; counted only once the response succeeds."""
    g.setdefault(_CATEGORY_KEY, category)


def step_repeated() -> None:
    """A retried enrolment step answered as the first time (a lost ``/enroll/finish``
    answer fetched again): counted as ``repeated``, so ``success`` stays one per certificate."""
    g.setdefault(_REPEATED_KEY, True)


def audit_event(event_name: str) -> None:
    """Counts the audit events that are metrics too (called after their commit)."""
    if event_name == "device.locked":
        LOCKOUTS.inc()


def rate_limited(group: str) -> None:
    RATE_LIMITED.labels(group).inc()


def fetch_failed(reason: str) -> None:
    """An outbound fetch of an RP document failed (idp.clients.fetch); ``reason`` is a bounded label."""
    FETCH_FAILURES.labels(reason).inc()


def _error_code(response: Response) -> str:
    body: Any = response.get_json(silent=True) if response.is_json else None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and code.isascii() and len(code) <= 40 else "http_" + str(response.status_code)


def _count(response: Response) -> None:
    endpoint = request.endpoint or ""
    ok = response.status_code < 400
    if endpoint in LOGIN_ENDPOINTS:
        LOGINS.labels("success" if ok else "failure", "" if ok else _error_code(response)).inc()
    elif endpoint in ENROLMENT_ENDPOINTS:
        outcome = ("repeated" if g.get(_REPEATED_KEY) else "success") if ok else "failure"
        ENROLMENTS.labels(ENROLMENT_ENDPOINTS[endpoint], outcome, "" if ok else _error_code(response)).inc()
    elif endpoint == "oidc.token" and ok and _CATEGORY_KEY in g:
        grant = request.form.get("grant_type", "")
        TOKENS.labels(grant if grant in KNOWN_GRANTS else "other", g.get(_CATEGORY_KEY)).inc()


def instrument_pool(engine: Engine) -> None:
    """Tracks checked-out connections, so a pool near exhaustion shows before timeouts do."""
    event.listen(engine, "checkout", lambda *_: DB_CONNECTIONS.inc())
    event.listen(engine, "checkin", lambda *_: DB_CONNECTIONS.dec())


def _allowed(token: str | None) -> bool:
    try:
        if ipaddress.ip_address(request.remote_addr or "").is_loopback:
            return True
    except ValueError:
        pass
    if not token:
        return False
    offered = request.headers.get("Authorization", "")
    return hmac.compare_digest(offered.encode(), f"Bearer {token}".encode())


def exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def init_app(app: Flask, token: str | None) -> None:
    @app.before_request
    def _start_clock() -> None:
        g._metrics_started = time.perf_counter()

    latency: dict[tuple[str, str], Any] = {}  # the histogram's child by labels: looked up once each

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("_metrics_started", None)
        if started is not None:
            method = request.method
            labels = (request.endpoint or "unmatched", method if method in KNOWN_METHODS else "other")
            child = latency.get(labels)
            if child is None:
                child = latency[labels] = LATENCY.labels(*labels)
            child.observe(time.perf_counter() - started)
        _count(response)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        if not _allowed(token):
            raise NotFound("not found")
        return Response(exposition(), content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
