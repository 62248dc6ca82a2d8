"""A relying party in Flask with Authlib's OpenID Connect client.

Run it against a development IdP (``make run`` in the repository root):

    IDP_ISSUER=http://localhost:8000 \\
    RP_CLIENT_ID=... RP_CLIENT_SECRET=... \\
    python -m examples.authlib_flask.app          # serves http://127.0.0.1:5000

Get the client with ``idp clients add --category municipal --name "City office"
--redirect-uri http://127.0.0.1:5000/callback --post-logout-redirect-uri http://127.0.0.1:5000/``
or register dynamically with an initial access token (:func:`register`).

What it shows: the code flow with PKCE S256 and a nonce (Authlib adds both), the ID token
validated by Authlib against the IdP's published keys, the UserInfo claims the category
allows, and RP-initiated logout.
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.integrations.flask_client import OAuth
from flask import Flask, jsonify, redirect, session, url_for
from flask.typing import ResponseReturnValue


def register(issuer: str, initial_access_token: str, redirect_uri: str, **metadata: Any) -> dict[str, Any]:
    """Dynamic registration (RFC 7591 §3) with an initial access token the IdP operator
    gave you: the token decides your category, so the request names none."""
    endpoint = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()["registration_endpoint"]
    response = requests.post(endpoint, json={"redirect_uris": [redirect_uri], **metadata},
                             headers={"Authorization": f"Bearer {initial_access_token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def create_app(*, issuer: str, client_id: str, client_secret: str,
               scope: str = "openid profile address") -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_hex(32)
    app.config["SESSION_COOKIE_NAME"] = "flask_rp_session"  # the IdP's cookies live on the same host in a demo
    oauth = OAuth(app)
    oauth.register(
        "jpdid",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": scope, "code_challenge_method": "S256"},
    )

    @app.get("/")
    def home() -> ResponseReturnValue:
        claims = session.get("claims")
        if not claims:
            return '<a href="/login">Sign in with JP Digital ID</a>'
        return jsonify(claims)

    @app.get("/login")
    def login() -> ResponseReturnValue:
        return oauth.jpdid.authorize_redirect(url_for("callback", _external=True))

    @app.get("/callback")
    def callback() -> ResponseReturnValue:
        token = oauth.jpdid.authorize_access_token()  # checks state, PKCE, ID token signature, nonce
        userinfo = oauth.jpdid.userinfo(token=token)
        session["id_token"] = token["id_token"]
        session["claims"] = {"id_token": dict(token["userinfo"]), "userinfo": dict(userinfo)}
        return redirect(url_for("home"))

    @app.get("/logout")
    def logout() -> ResponseReturnValue:
        """RP-Initiated Logout 1.0 §2: back to the IdP with the ID token as a hint."""
        id_token = session.pop("id_token", None)
        session.clear()
        metadata = oauth.jpdid.load_server_metadata()
        query = {"post_logout_redirect_uri": url_for("home", _external=True), "client_id": client_id}
        if id_token:
            query["id_token_hint"] = id_token
        return redirect(f"{metadata['end_session_endpoint']}?{urlencode(query)}")

    return app


if __name__ == "__main__":
    create_app(issuer=os.environ.get("IDP_ISSUER", "http://localhost:8000"),
               client_id=os.environ["RP_CLIENT_ID"], client_secret=os.environ["RP_CLIENT_SECRET"]).run(port=5000)
