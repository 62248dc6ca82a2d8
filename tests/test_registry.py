"""Dynamic registration metadata checks (OIDC Registration §2, PROTOCOL §2, §5, §6)."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc import jwk

from idp.clients import registry
from idp.clients.fetch import FetchError
from idp.errors import InvalidClientMetadata, InvalidRedirectUri
from idp.pairwise import sector_identifier
from idp.policy import load_policy

POLICY = load_policy()
KEY = jwk.ECKey.generate_key("P-256", auto_kid=True)
PUBLIC_JWKS = {"keys": [KEY.as_dict(private=False)]}
SECTOR_URI = "https://rp.example/sector.json"


def check(body: dict[str, Any], *, loopback: bool = False) -> dict[str, Any]:
    return registry.validate_metadata(body, policy=POLICY, allow_http_loopback=loopback)


def municipal(**extra: Any) -> dict[str, Any]:
    return {"rp_category": "municipal", "redirect_uris": ["https://rp.example/cb"], **extra}


# 12345678901 has check digit 8 by the ordinance's rule (worked out in tests/test_privacy.py).
INDIVIDUAL_NUMBER = "123456789018"


@pytest.fixture
def sector_list(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    listed: list[str] = []

    def fake_fetch(url: str, *, allow_http_loopback: bool) -> Any:
        if url != SECTOR_URI:
            raise FetchError(f"{url} could not be fetched")
        return listed

    monkeypatch.setattr(registry, "fetch_json", fake_fetch)
    return listed


def test_minimal_municipal_client() -> None:
    meta = check(municipal())
    assert meta["rp_category"] == "municipal"
    assert meta["subject_type"] == "pairwise"
    assert meta["token_endpoint_auth_method"] == "client_secret_basic"
    assert meta["response_types"] == ["code"]


@pytest.mark.parametrize("category", [None, "", "sports", "Municipal"])
def test_missing_or_unknown_category(category: str | None) -> None:
    body = municipal(rp_category=category) if category is not None else {"redirect_uris": ["https://rp.example/cb"]}
    with pytest.raises(InvalidClientMetadata, match="rp_category"):
        check(body)


def test_not_an_object() -> None:
    with pytest.raises(InvalidClientMetadata):
        registry.validate_metadata(["x"], policy=POLICY, allow_http_loopback=False)


@pytest.mark.parametrize("uris", [None, [], "https://rp.example/cb", ["https://rp.example/cb#x"],
                                  ["https://rp.example/cb#"], ["/relative"], ["https:///cb"]])
def test_bad_redirect_uris(uris: Any) -> None:
    with pytest.raises(InvalidRedirectUri):
        check(municipal(redirect_uris=uris))


def test_http_redirect_only_for_loopback_when_allowed() -> None:
    with pytest.raises(InvalidRedirectUri):
        check(municipal(redirect_uris=["http://localhost:9000/cb"]))
    assert check(municipal(redirect_uris=["http://localhost:9000/cb"]), loopback=True)
    assert check(municipal(redirect_uris=["http://127.0.0.1:9000/cb"]), loopback=True)
    with pytest.raises(InvalidRedirectUri):
        check(municipal(redirect_uris=["http://rp.example/cb"]), loopback=True)


def test_several_redirect_hosts_need_a_sector_identifier_uri() -> None:
    with pytest.raises(InvalidClientMetadata, match="sector_identifier_uri"):
        check(municipal(redirect_uris=["https://a.example/cb", "https://b.example/cb"]))
    # Several paths on one host are fine.
    assert check(municipal(redirect_uris=["https://a.example/cb", "https://A.example/other"]))


def test_sector_identifier_uri_must_list_every_redirect_uri(sector_list: list[str]) -> None:
    uris = ["https://a.example/cb", "https://b.example/cb"]
    sector_list[:] = ["https://a.example/cb"]
    with pytest.raises(InvalidClientMetadata, match="b.example"):
        check(municipal(redirect_uris=uris, sector_identifier_uri=SECTOR_URI))
    sector_list.append("https://b.example/cb")
    meta = check(municipal(redirect_uris=uris, sector_identifier_uri=SECTOR_URI))
    assert meta["sector_identifier_uri"] == SECTOR_URI
    assert sector_identifier(redirect_uris=uris, sector_identifier_uri=SECTOR_URI) == "rp.example"


def test_sector_identifier_uri_must_be_a_list_of_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "fetch_json", lambda url, **kw: {"redirect_uris": ["https://rp.example/cb"]})
    with pytest.raises(InvalidClientMetadata, match="JSON array"):
        check(municipal(sector_identifier_uri=SECTOR_URI))


def test_unfetchable_sector_identifier_uri(sector_list: list[str]) -> None:
    with pytest.raises(InvalidClientMetadata, match="sector_identifier_uri"):
        check(municipal(sector_identifier_uri="https://elsewhere.example/s.json"))


def test_financial_requires_private_key_jwt() -> None:
    with pytest.raises(InvalidClientMetadata, match="private_key_jwt"):
        check({"rp_category": "financial", "redirect_uris": ["https://bank.example/cb"],
               "token_endpoint_auth_method": "client_secret_basic", "jwks": PUBLIC_JWKS})
    meta = check({"rp_category": "financial", "redirect_uris": ["https://bank.example/cb"], "jwks": PUBLIC_JWKS})
    assert meta["token_endpoint_auth_method"] == "private_key_jwt"


@pytest.mark.parametrize("category", ["financial", "municipal"])
def test_private_key_jwt_needs_keys(category: str) -> None:
    with pytest.raises(InvalidClientMetadata, match="jwks"):
        check({"rp_category": category, "redirect_uris": ["https://rp.example/cb"],
               "token_endpoint_auth_method": "private_key_jwt"})


def test_jwks_uri_is_accepted_for_private_key_jwt() -> None:
    meta = check(municipal(token_endpoint_auth_method="private_key_jwt", jwks_uri="https://rp.example/jwks"))
    assert meta["jwks_uri"] == "https://rp.example/jwks"


def test_jwks_with_a_private_key_is_refused() -> None:
    with pytest.raises(InvalidClientMetadata, match="public keys only"):
        check(municipal(token_endpoint_auth_method="private_key_jwt",
                        jwks={"keys": [KEY.as_dict(private=True)]}))


@pytest.mark.parametrize("jwks", [{"keys": "x"}, [], {"keys": [{"kty": "EC", "crv": "P-256"}]}])
def test_bad_jwks_is_refused(jwks: Any) -> None:
    with pytest.raises(InvalidClientMetadata, match="jwks"):
        check(municipal(jwks=jwks))


def test_public_subject_type_is_refused() -> None:
    with pytest.raises(InvalidClientMetadata, match="pairwise"):
        check(municipal(subject_type="public"))


@pytest.mark.parametrize("where", ["client_name", "redirect", "contacts"])
def test_individual_number_in_metadata_is_refused(where: str) -> None:
    number = INDIVIDUAL_NUMBER
    body = {"client_name": municipal(client_name=f"RP {number}"),
            "redirect": municipal(redirect_uris=[f"https://rp.example/cb?id={number}"]),
            "contacts": municipal(contacts=[f"{number[:4]}-{number[4:8]}-{number[8:]}"])}[where]
    with pytest.raises(InvalidClientMetadata, match="individual number"):
        check(body)


def test_twelve_digits_without_a_valid_check_digit_are_fine() -> None:
    assert check(municipal(client_name="RP 123456789012"))["client_name"] == "RP 123456789012"


@pytest.mark.parametrize("body", [
    municipal(response_types=["token"]),
    municipal(grant_types=["client_credentials"]),
    municipal(id_token_signed_response_alg="none"),
    municipal(id_token_encrypted_response_alg="RSA-OAEP"),
    municipal(logo_uri="http://rp.example/logo.png"),
    municipal(client_name="x" * 301),
])
def test_other_refusals(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidClientMetadata):
        check(body)


def test_native_private_use_redirect_has_a_sector_of_its_own() -> None:
    """PROTOCOL §7.2: a private-use scheme names no operator, so the app is its own sector."""
    meta = check(municipal(application_type="native", redirect_uris=["com.example.app:/cb"]))
    assert sector_identifier(redirect_uris=meta["redirect_uris"], sector_identifier_uri=None,
                             application_type="native", client_id="app-1") == "native:app-1"


def test_client_ids_never_start_with_a_dash(monkeypatch) -> None:
    """An operator passes client ids to `idp clients show|disable`: a leading dash would read as an option."""
    drawn = iter(["-starts-with-a-dash", "_fine-AAAAAAAAAAAAAAAAAAAAAAA"])
    monkeypatch.setattr(registry.secrets, "token_urlsafe", lambda n: next(drawn))
    assert registry.new_client_id() == "_fine-AAAAAAAAAAAAAAAAAAAAAAA"
