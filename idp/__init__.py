"""OpenID Connect identity provider for Japan's private-sector digital IDs.

``create_app`` assembles the Flask application from validated settings; every
subsystem registers itself through ``init_app`` or a blueprint.
"""

from __future__ import annotations

from types import FunctionType
from typing import Any, Callable

from flask import Flask, render_template
from flask.sessions import SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from idp.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    from idp import errors
    from idp.ca import views as ca_views
    from idp.context import load_services
    from idp import enrollment, openapi
    from idp.oidc import session as db_session
    from idp.oidc import views as oidc_views
    from idp.oidc.server import create_server
    from idp.ops import health, logs, metrics, outage
    from idp.signing import web as signing_web
    from idp.web import (account, browser, consent, dev_host, guide, headers, i18n, input_guard, login, page_cache,
                         ratelimit)

    settings = settings or Settings.from_env()
    services = load_services(settings)
    app = IdPFlask(__name__, instance_path=str(settings.instance_dir))
    app.config.update(
        SECRET_KEY=services.secret_key,
        MAX_CONTENT_LENGTH=256 * 1024,
        TESTING=settings.testing,
        OAUTH2_SCOPES_SUPPORTED=None,
        JSON_SORT_KEYS=False,
    )
    app.extensions["idp"] = services
    app.session_interface = NoCookieSession()
    if settings.proxy_hops:
        # Behind IDP_PROXY_HOPS trusted reverse proxies: the client address (rate limits),
        # scheme (authlib's https check) and host come from their X-Forwarded-* headers.
        # URLs the IdP signs or compares (aud, htu, endpoints) come from the issuer, never
        # from these headers (idp.settings.Settings.url).
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops,  # type: ignore[method-assign]
                                x_host=hops, x_port=hops)
    logs.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    outage.init_app(app)
    signing_web.init_app(app)
    metrics.init_app(app, settings.metrics_token)
    metrics.instrument_pool(services.db.engine)
    input_guard.init_app(app)
    dev_host.init_app(app, settings)
    db_session.init_app(app)
    browser.init_app(app)
    i18n.init_app(app)
    page_cache.init_app(app)
    app.extensions["idp.oauth"] = create_server(app)
    for blueprint in (health.bp, oidc_views.bp, openapi.bp, enrollment.bp, login.bp, consent.bp, account.bp,
                      ca_views.bp, guide.bp):
        app.register_blueprint(blueprint)
    ratelimit.init_app(app, settings)
    if settings.development:  # the newcomer's demo exists only on a localhost issuer
        from idp import demo

        demo.init_app(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", demo=settings.development)

    return app


class IdPFlask(Flask):
    """Flask that asks once per function whether a view or hook is a coroutine function.

    Flask wraps every view and hook in ``ensure_sync`` on every call, and that asks
    ``inspect.iscoroutinefunction`` each time: fourteen times per request here, for an
    answer that never changes. Plain functions keep their first answer; anything else
    (a bound method, a partial) is asked each time as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        known = self._synchronous.get(func)
        if known is None:
            known = super().ensure_sync(func)
            if isinstance(func, FunctionType):
                self._synchronous[func] = known
        return known


class NoCookieSession(SessionInterface):
    """No Flask cookie session: the IdP's browser state is its own two cookies
    (:mod:`idp.web.browser`) and server-side rows. Flask's default would still build a
    signing serializer on every request to look for a cookie nobody sets."""

    def open_session(self, app: Flask, request: object) -> None:
        return None

    def save_session(self, app: Flask, session: object, response: object) -> None:
        return None
