"""Django settings for the mozilla-django-oidc example RP.

``build(...)`` returns them for a given IdP and client (the test uses it); importing this
module as ``DJANGO_SETTINGS_MODULE`` reads them from the environment instead:

    IDP_ISSUER=http://localhost:8000 RP_CLIENT_ID=... RP_CLIENT_SECRET=... \\
    DJANGO_SETTINGS_MODULE=examples.django_rp.settings django-admin migrate
    DJANGO_SETTINGS_MODULE=examples.django_rp.settings django-admin runserver 127.0.0.1:8001

The client is registered by the IdP operator for the ``transport`` category, so the
IdP releases age-over flags and never a name or birth date:

    idp clients add --category transport --name "Railway (Django)" --auth-method client_secret_post \\
        --redirect-uri http://127.0.0.1:8001/oidc/callback/ --post-logout-redirect-uri http://127.0.0.1:8001/
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import requests


def build(*, issuer: str, client_id: str, client_secret: str, database: Path) -> dict[str, Any]:
    provider = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    return {
        "SECRET_KEY": secrets.token_hex(32),
        "DEBUG": False,
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost"],
        "ROOT_URLCONF": "examples.django_rp.urls",
        "INSTALLED_APPS": ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                           "mozilla_django_oidc"],
        "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware",
                       "django.middleware.common.CommonMiddleware",
                       "django.middleware.csrf.CsrfViewMiddleware",
                       "django.contrib.auth.middleware.AuthenticationMiddleware"],
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        "SESSION_COOKIE_NAME": "django_rp_session",  # the IdP's cookies share the host in a demo
        "CSRF_COOKIE_NAME": "django_rp_csrftoken",
        "USE_TZ": True,
        "AUTHENTICATION_BACKENDS": ["examples.django_rp.backend.JpDigitalIdBackend"],
        "LOGIN_REDIRECT_URL": "/",
        "LOGOUT_REDIRECT_URL": "/",
        # mozilla-django-oidc: the IdP's endpoints from its discovery document
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": client_secret,
        "OIDC_RP_SIGN_ALGO": "RS256",  # the IdP's default ID-token algorithm
        "OIDC_RP_SCOPES": "openid age",
        "OIDC_USE_PKCE": True,  # S256: the IdP requires it of every client
        "OIDC_STORE_ID_TOKEN": True,  # for RP-initiated logout's id_token_hint
        "OIDC_OP_AUTHORIZATION_ENDPOINT": provider["authorization_endpoint"],
        "OIDC_OP_TOKEN_ENDPOINT": provider["token_endpoint"],
        "OIDC_OP_USER_ENDPOINT": provider["userinfo_endpoint"],
        "OIDC_OP_JWKS_ENDPOINT": provider["jwks_uri"],
        "OIDC_OP_LOGOUT_ENDPOINT": provider["end_session_endpoint"],
        "OIDC_OP_LOGOUT_URL_METHOD": "examples.django_rp.backend.logout_url",
    }


if os.environ.get("RP_CLIENT_ID"):
    globals().update(build(issuer=os.environ.get("IDP_ISSUER", "http://localhost:8000"),
                           client_id=os.environ["RP_CLIENT_ID"], client_secret=os.environ["RP_CLIENT_SECRET"],
                           database=Path(os.environ.get("RP_DATABASE", "django-rp.sqlite3"))))
