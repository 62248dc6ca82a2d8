"""Per-client-address rate limits on the enrolment, activation and login groups (PROTOCOL §1).

Flask-Limiter with storage from ``IDP_RATE_LIMIT_STORAGE`` (``memory://`` for one process,
``redis://…`` shared by every worker and instance). ``IDP_RATE_LIMIT_PER_MINUTE=0``
disables it for load tests. Beyond the limit: 429 with ``Retry-After``.

Each group is one shared limit (``scope`` = the group), so the endpoints of a group draw
on one budget per address. The views are wrapped after the blueprints are registered;
Flask-Limiter keys a decorated view by its module and name, which the wrapper keeps.
Counters are prefixed with the issuer: the instances of one deployment share them, other
deployments on the same Redis do not. Should the shared storage fail, the limiter falls
back to per-process memory rather than failing logins.
"""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from idp.settings import Settings

GROUPS = {
    "enrollment": ("enroll.begin", "enroll.finish"),
    "activation": ("enroll.activate",),
    "login": ("login.options", "login.assertion", "account.login_options", "account.login_assertion"),
}


def init_app(app: Flask, settings: Settings) -> None:
    if settings.rate_limit_per_minute == 0:
        return
    limiter = Limiter(get_remote_address, app=app, storage_uri=settings.rate_limit_storage,
                      headers_enabled=True, default_limits=[], strategy="moving-window",
                      key_prefix=f"idp:{settings.issuer}", swallow_errors=True, in_memory_fallback_enabled=True)
    limit = f"{settings.rate_limit_per_minute}/minute"
    for group, endpoints in GROUPS.items():
        shared = limiter.shared_limit(limit, scope=group)
        for endpoint in endpoints:
            app.view_functions[endpoint] = shared(app.view_functions[endpoint])
    app.extensions["idp.limiter"] = limiter
