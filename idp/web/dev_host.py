"""Development only: the person's pages are served at the issuer's own host name.

A passkey belongs to one domain, the WebAuthn RP ID, which is the issuer's host (WebAuthn L3
§5.1.3; an IP address is never a valid RP ID). Someone who opens ``http://127.0.0.1:8000``
while the issuer is ``http://localhost:8000`` would find that no passkey works there, with
no hint why. So a GET for one of the person's pages at another loopback name is redirected
to the same page at the issuer. The demo services on the other loopback name (they stand
for a second pairwise sector, OIDC Core §8.1) are not pages of the IdP and are left alone.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, redirect, request
from flask.typing import ResponseReturnValue

from idp.settings import LOOPBACK_HOSTS, Settings

PERSON_PAGES = frozenset({"/", "/login", "/login/wallet", "/consent", "/account", "/help", "/demo/", "/demo/wallet"})


def init_app(app: Flask, settings: Settings) -> None:
    if not settings.development:
        return
    issuer_host = urlsplit(settings.issuer).netloc

    @app.before_request
    def _to_the_issuer_host() -> ResponseReturnValue | None:
        if request.method != "GET" or request.path not in PERSON_PAGES or request.host == issuer_host:
            return None
        if urlsplit(f"//{request.host}").hostname not in LOOPBACK_HOSTS:
            return None
        query = request.query_string.decode("latin-1")
        return redirect(settings.url(request.path) + (f"?{query}" if query else ""), code=302)
