"""Per-client-address rate limits on the enrolment, activation and login groups (PROTOCOL §1).

Flask-Limiter with storage from ``IDP_RATE_LIMIT_STORAGE``, else ``IDP_REDIS_URL``
(``memory://`` for one process, ``redis://…`` shared by every worker and instance). ``IDP_RATE_LIMIT_PER_MINUTE=0``
disables it for load tests. Beyond the limit: 429 with ``Retry-After``.

Each group is one shared limit (``scope`` = the group), so the endpoints of a group draw
on one budget per address. The views are wrapped after the blueprints are registered;
Flask-Limiter keys a decorated view by its module and name, which the wrapper keeps.
Counters are prefixed with the issuer: the instances of one deployment share them, other
deployments on the same Redis do not.

Should the shared storage fail, the limited endpoints are refused with 503 and
``Retry-After`` (``idp.ops.outage``) until it is back: they fail CLOSED. Falling back to
per-process counters would multiply every limit by the number of processes, silently,
exactly when an attacker may have caused the outage; the rest of the IdP (discovery,
tokens, userinfo, pages) keeps working. Redis waits are bounded by ``REDIS_TIMEOUT``.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from idp.ops import metrics
from idp.settings import Settings

GROUPS = {
    "enrollment": ("enroll.begin", "enroll.finish"),
    "activation": ("enroll.activate",),
    "login": ("login.options", "login.assertion", "account.login_options", "account.login_assertion"),
    # Each one stores an authorization transaction or a pushed request, unauthenticated.
    "authorization": ("oidc.authorize", "oidc.pushed_authorization_request"),
}
# A browser opens several authorization requests per sign-in (SSO to several RPs, retries,
# shared addresses behind NAT): this group gets a multiple of the per-minute budget.
FACTORS = {"authorization": 5}


REDIS_TIMEOUT = 1.0
"""Seconds to connect to or wait for Redis before the request is refused."""


def _count_refusal(limit: RequestLimit) -> None:
    group = next((name for name, endpoints in GROUPS.items() if request.endpoint in endpoints), "other")
    metrics.rate_limited(group)


def init_app(app: Flask, settings: Settings) -> None:
    if settings.rate_limit_per_minute == 0:
        return
    options: dict[str, object] = {}
    if settings.rate_limit_storage.startswith(("redis://", "rediss://", "unix://")):
        options = {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT,
                   "health_check_interval": 30}
    limiter = Limiter(get_remote_address, app=app, storage_uri=settings.rate_limit_storage,
                      storage_options=options, headers_enabled=True, default_limits=[],
                      strategy="moving-window", key_prefix=f"idp:{settings.issuer}", swallow_errors=False,
                      in_memory_fallback_enabled=False, on_breach=_count_refusal)
    for group, endpoints in GROUPS.items():
        limit = f"{settings.rate_limit_per_minute * FACTORS.get(group, 1)}/minute"
        shared = limiter.shared_limit(limit, scope=group)
        for endpoint in endpoints:
            app.view_functions[endpoint] = shared(app.view_functions[endpoint])
    app.extensions["idp.limiter"] = limiter
