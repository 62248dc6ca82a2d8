"""A dependency outage (database, Redis) answers 503, not a 500 with a traceback per request.

Every wait on PostgreSQL, SQLite and Redis is bounded (``idp.storage.db``,
``idp.web.ratelimit``), so an outage surfaces quickly as an exception of the driver.
Here it becomes ``503 {"error": "temporarily_unavailable", ...}`` with ``Retry-After``
(RFC 9110 §15.6.4, §10.2.3), which a load balancer and a client both understand, and
one log line per dependency per ``LOG_INTERVAL`` seconds (with the number of requests
refused meanwhile) instead of hundreds of identical tracebacks.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, jsonify
from limits.errors import StorageError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

RETRY_AFTER_SECONDS = 5
LOG_INTERVAL = 30.0
DATABASE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, PoolTimeout)
RATE_LIMIT_STORE_ERRORS: tuple[type[BaseException], ...] = (StorageError, RedisError)

log = logging.getLogger("idp.outage")


class _OncePerInterval:
    """Logs the first failure of a dependency, then at most one summary line per interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, dependency: str, message: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(dependency)
            if last is not None and now - last < self.interval:
                self._suppressed[dependency] = self._suppressed.get(dependency, 0) + 1
                return
            self._last[dependency] = now
            suppressed = self._suppressed.pop(dependency, 0)
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        log.error("%s (%s: %s); %d more refused requests since the last report",
                  message, type(exc).__name__, detail, suppressed)


reporter = _OncePerInterval(LOG_INTERVAL)


def unavailable(description: str) -> Response:
    response = jsonify({"error": "temporarily_unavailable", "error_description": description})
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


def database_unavailable(exc: BaseException) -> Response:
    reporter.report("database", "database unavailable: answering 503", exc)
    return unavailable("the service is temporarily unavailable; try again shortly")


def rate_limit_store_unavailable(exc: BaseException) -> Response:
    """Fail closed: without the shared counters the limits would silently become per process."""
    reporter.report("redis", "rate-limit store (IDP_REDIS_URL) unreachable: refusing rate-limited "
                    "endpoints until it is back (fail closed)", exc)
    return unavailable("rate limiting is unavailable, so this endpoint is refused for now; try again shortly")


def init_app(app: Flask) -> None:
    for error in DATABASE_ERRORS:
        app.register_error_handler(error, database_unavailable)
    for error in RATE_LIMIT_STORE_ERRORS:
        app.register_error_handler(error, rate_limit_store_unavailable)
