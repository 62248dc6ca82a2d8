"""pyoidc (``oic``): its stock ``Client.register(url, registration_token=...)`` succeeds with an
initial access token the operator minted for a category. pyoidc drops metadata it does not
know (``rp_category`` among them): the token carries the category instead. It also sends a
non-JWT token base64-encoded, which the IdP accepts as the same token."""

from __future__ import annotations

from oic.oic import Client
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from examples.conftest import mint_token


def test_pyoidc_stock_register_with_a_registration_token(idp) -> None:
    token = mint_token(idp, "medical")
    client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    # The RP's own URL, as every pyoidc RP sets it: pyoidc derives its request_uris from it,
    # because the IdP's discovery says require_request_uri_registration.
    client.base_url = "http://127.0.0.1:9/pyoidc/"
    client.provider_config(idp.base_url)
    response = client.register(client.provider_info["registration_endpoint"], registration_token=token,
                               redirect_uris=["http://127.0.0.1:9/pyoidc/cb"], client_name="Clinic (pyoidc)")
    assert response["client_id"] and client.client_secret
    assert response["rp_category"] == "medical"
    assert response["response_types"] == ["code"]
