"""The Django RP (mozilla-django-oidc), registered by the operator for the transport category,
completes a login through the IdP; it receives age-over flags and no name or birth date."""

from __future__ import annotations

import json

import requests

from examples.conftest import operator_cli, serve, sign_in


def test_django_rp_login(idp, person, tmp_path) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    from examples.django_rp.settings import build

    holder: dict = {}
    with serve(lambda environ, start_response: holder["app"](environ, start_response)) as base:
        client = json.loads(operator_cli(idp, "clients", "add", "--category", "transport", "--name", "Railway",
                                         "--auth-method", "client_secret_post",
                                         "--redirect-uri", f"{base}/oidc/callback/",
                                         "--post-logout-redirect-uri", f"{base}/"))
        settings.configure(**build(issuer=idp.base_url, client_id=client["client_id"],
                                   client_secret=client["client_secret"], database=tmp_path / "rp.sqlite3"))
        django.setup()
        call_command("migrate", verbosity=0)
        holder["app"] = get_wsgi_application()

        browser = requests.Session()
        assert "Sign in" in browser.get(f"{base}/", timeout=10).text
        page = sign_in(idp, person, f"{base}/oidc/authenticate/", browser)
        assert page.status_code == 200 and page.url == f"{base}/", page.text
        shown = page.json()
        assert shown["user"] == shown["claims"]["sub"]
        assert shown["claims"]["age_over_18"] is True and shown["claims"]["age_over_65"] is False
        assert not {"name", "birthdate", "address"} & set(shown["claims"])
