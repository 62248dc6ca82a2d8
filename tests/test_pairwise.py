"""Pairwise subject identifiers (OIDC Core §8.1, PROTOCOL §2)."""

from __future__ import annotations

import base64
import re

import pytest

from idp.pairwise import pairwise_sub, redirect_hosts, sector_identifier

SALT = b"s" * 32


def test_sector_is_the_host_of_the_single_redirect_uri() -> None:
    assert sector_identifier(redirect_uris=["https://RP.Example.JP:8443/cb?x=1"],
                             sector_identifier_uri=None) == "rp.example.jp"


def test_sector_identifier_uri_host_wins() -> None:
    assert sector_identifier(redirect_uris=["https://a.example/cb", "https://b.example/cb"],
                             sector_identifier_uri="https://sector.example/list.json") == "sector.example"


@pytest.mark.parametrize("uris", [[], ["com.example.app:/cb"]])
def test_no_host_is_an_error(uris: list[str]) -> None:
    with pytest.raises(ValueError):
        sector_identifier(redirect_uris=uris, sector_identifier_uri=None)


def test_redirect_hosts() -> None:
    assert redirect_hosts(["https://A.example/1", "https://a.example/2", "https://b.example/"]) == {
        "a.example", "b.example"}


def test_same_sector_and_account_same_sub() -> None:
    a = pairwise_sub(sector="rp.example", account_id="acct-1", salt=SALT)
    assert a == pairwise_sub(sector="rp.example", account_id="acct-1", salt=SALT)


@pytest.mark.parametrize("change", [
    {"sector": "other.example"},
    {"account_id": "acct-2"},
    {"salt": b"t" * 32},
])
def test_any_input_change_changes_the_sub(change: dict) -> None:
    base = {"sector": "rp.example", "account_id": "acct-1", "salt": SALT}
    assert pairwise_sub(**base) != pairwise_sub(**{**base, **change})


def test_fields_are_separated() -> None:
    # "ab" + "c" must not collide with "a" + "bc".
    assert pairwise_sub(sector="ab", account_id="c", salt=SALT) != pairwise_sub(
        sector="a", account_id="bc", salt=SALT)


def test_sub_is_unpadded_base64url_of_32_bytes() -> None:
    sub = pairwise_sub(sector="rp.example", account_id="acct-1", salt=SALT)
    assert len(sub) == 43 and re.fullmatch(r"[A-Za-z0-9_-]{43}", sub)
    assert len(base64.urlsafe_b64decode(sub + "=")) == 32
