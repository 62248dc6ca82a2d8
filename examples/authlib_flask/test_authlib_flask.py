"""The Authlib Flask RP registers with a category-bound initial access token and completes a
login through the IdP; the page it shows carries the pairwise sub and the municipal claims."""

from __future__ import annotations

import requests

from examples.authlib_flask.app import create_app, register
from examples.conftest import mint_token, serve, sign_in
from tests.support.http import body_of


def test_flask_rp_login(idp, person) -> None:
    token = mint_token(idp, "municipal")
    holder: dict = {}

    def late(environ, start_response):  # the redirect URI needs the port before the app exists
        return holder["app"](environ, start_response)

    with serve(late) as base:
        client = register(idp.base_url, token, f"{base}/callback", client_name="City office (Authlib)",
                          post_logout_redirect_uris=[f"{base}/"])
        assert client["rp_category"] == "municipal"
        holder["app"] = create_app(issuer=idp.base_url, client_id=client["client_id"],
                                   client_secret=client["client_secret"])
        browser = requests.Session()
        page = sign_in(idp, person, f"{base}/login", browser)
        assert page.status_code == 200, page.text
        claims = body_of(page)
        assert claims["id_token"]["sub"] == claims["userinfo"]["sub"]
        assert claims["id_token"]["acr"] and "hwk" in claims["id_token"]["amr"]
        assert claims["userinfo"]["name"] == "前橋　太郎"
        assert claims["userinfo"]["address"]["formatted"].startswith("群馬県")
        logout = browser.get(f"{base}/logout", allow_redirects=False, timeout=10)
        assert logout.headers["Location"].startswith(idp.base_url + "/logout?")
