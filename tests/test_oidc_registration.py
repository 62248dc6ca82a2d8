"""Registration metadata for request objects and logout, and RFC 7592 client read and delete."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import RunningIdP
from tests.support.rp import RelyingParty, browser_login, post_registration
from tests.support.rp_host import RpHost


@pytest.fixture(scope="module")
def host() -> Iterator[RpHost]:
    with RpHost() as running:
        yield running


def attempt(idp: RunningIdP, host: RpHost, **metadata: Any) -> requests.Response:
    body = {"rp_category": "municipal", "redirect_uris": [host.url("/cb")], **metadata}
    return post_registration(idp.base_url, body, session=requests.Session())


@pytest.mark.parametrize(("metadata", "status"), [
    ({"request_uris": ["http://127.0.0.1:9/r#hash-of-content"]}, 201),
    ({"request_uris": ["http://rp.example/r"]}, 400),
    ({"request_object_signing_alg": "none"}, 201),
    ({"request_object_signing_alg": "HS256"}, 400),
    ({"backchannel_logout_uri": "http://127.0.0.1:9/bcl", "backchannel_logout_session_required": True}, 201),
    ({"backchannel_logout_uri": "http://127.0.0.1:9/bcl#frag"}, 400),
    ({"backchannel_logout_uri": "http://127.0.0.1:9/bcl", "backchannel_logout_session_required": "yes"}, 400),
    ({"backchannel_logout_session_required": True}, 400),
])
def test_metadata_rules(idp: RunningIdP, host: RpHost, metadata: dict[str, Any], status: int) -> None:
    response = attempt(idp, host, **metadata)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == "invalid_client_metadata"


def test_read_then_delete_ends_the_client(idp: RunningIdP, host: RpHost) -> None:
    """RFC 7592 §2.1 read, §2.3 delete: 204, then the client, its secret, its registration
    token and its tokens are all gone."""
    wallet = idp.wallet()
    device = wallet.enroll(idp.card())
    rp = RelyingParty.register(idp.base_url, redirect_uri=host.url(f"/cb/{secrets.token_hex(3)}"),
                               rp_category="municipal", grant_types=["authorization_code", "refresh_token"])
    browser = requests.Session()
    result = rp.finish(browser_login(browser, idp.base_url, rp.start(browser, scope="openid offline_access",
                                                                     prompt="consent"), wallet, device))
    uri, token = rp.client["registration_client_uri"], rp.client["registration_access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    read = requests.get(uri, headers=bearer, timeout=10)
    assert read.status_code == 200 and read.json()["client_id"] == rp.client_id
    assert not any(key.startswith("_") for key in read.json())
    assert requests.delete(uri, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert requests.delete(uri, headers=bearer, timeout=10).status_code == 204
    assert requests.get(uri, headers=bearer, timeout=10).status_code == 401
    assert requests.delete(uri, headers=bearer, timeout=10).status_code == 401
    assert rp.userinfo  # the RP object still exists; the OP no longer knows the client:
    assert requests.get(rp.provider["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {result.access_token}"}, timeout=10).status_code == 401
    refresh = rp.token_request({"grant_type": "refresh_token", "refresh_token": result.refresh_token or ""})
    assert refresh.status_code in (400, 401) and refresh.json()["error"] in ("invalid_client", "invalid_grant")
    page = requests.get(rp.authorization_url()[0], allow_redirects=False, timeout=10)
    assert page.status_code == 400 and "Location" not in page.headers
