"""The acceptance test of the core path (PROTOCOL.md §2–§4, §6), end to end over HTTP.

A person enrols a phone with a test My Number Card, activates it, and signs in at a
municipal RP and at a transport RP registered dynamically on different hosts. Both ID
tokens are validated by independent client code (authlib client, jwcrypto) against the
published JWKS. Pairwise subjects, category claims, sector identifiers, a second phone,
silent re-login and the RFC 9207 ``iss`` are checked; after every flow the whole
database is scanned for anything shaped like an individual number.

The module runs its own IdP, so the scan sees only what these flows wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from sqlalchemy import create_engine, text

from idp.proofing.demo_card import TestJpkiCA
from tests.conftest import RunningIdP, start_idp
from tests.support import core
from tests.support.rp import RelyingParty, TokenResult, token_hash
from tests.support.rp_host import RpHost

PROFILE_CLAIMS = {"name", "address", "birthdate", "gender"}
# 1234 5678 9018 has a valid check digit (the well-known sample individual number).
INDIVIDUAL_NUMBER = "123456789018"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:
    with contextlib.contextmanager(start_idp)(tmp_path_factory.mktemp("e2e"), jpki_ca) as running:
        yield running


@pytest.fixture(scope="module")
def rp_host() -> Iterator[RpHost]:
    with RpHost() as host:
        yield host


@pytest.fixture
def person(server: RunningIdP) -> Any:
    return core.card(server, name="高崎　花子", gender="2", date_of_birth="319550615",
                     address="群馬県高崎市高松町３５番地１")


@pytest.fixture
def rps(server: RunningIdP) -> tuple[RelyingParty, RelyingParty]:
    municipal = core.register(server, "municipal", host="127.0.0.1", client_name="高崎市 電子申請")
    transport = core.register(server, "transport", host="localhost", client_name="上信電鉄 シニア割")
    assert urlsplit(municipal.redirect_uri).hostname != urlsplit(transport.redirect_uri).hostname
    return municipal, transport


@pytest.fixture(autouse=True)
def no_individual_number_afterwards(server: RunningIdP) -> Iterator[None]:
    """Whatever a test here did, the database holds no individual number afterwards."""
    yield
    engine = server.services().db.engine
    assert core.text_columns(engine) > 20
    assert core.individual_numbers_in(engine) == []


def assert_device_login_token(result: TokenResult, rp: RelyingParty, server: RunningIdP) -> None:
    """PROTOCOL §2, §6: acr, amr (hwk + user), auth_time, at_hash, iss."""
    claims = result.claims
    assert claims["iss"] == server.base_url
    assert claims["aud"] == rp.client_id or rp.client_id in claims["aud"]
    assert isinstance(claims["acr"], str) and claims["acr"]
    assert {"hwk", "user"} <= set(claims["amr"])
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
    assert claims["at_hash"] == token_hash(result.access_token, result.header["alg"])
    assert claims["nonce"] == result.request.nonce


def login(server: RunningIdP, browser: requests.Session, rp: RelyingParty, device: Any, **kwargs: Any) -> TokenResult:
    """A full login; the authorization response must carry ``iss`` (RFC 9207)."""
    cb = core.callback(server, browser, rp, device, **kwargs)
    params = dict(parse_qsl(urlsplit(cb).query))
    assert params["iss"] == server.base_url
    assert params["state"] == rp.last_request.state
    result = rp.finish(cb)
    assert_device_login_token(result, rp, server)
    return result


def test_enrol_then_log_in_at_a_municipal_and_a_transport_rp(server: RunningIdP, person: Any, rps: Any,  # type: ignore[no-untyped-def]
                                                            browser) -> None:
    municipal, transport = rps
    device = core.enrol(server, person)
    assert device.serial and device.certificate.serial_number == int(device.serial, 16)

    city = login(server, browser, municipal, device)
    city_info = municipal.userinfo(city.access_token)
    assert city_info["sub"] == city.sub
    assert PROFILE_CLAIMS <= set(city_info)
    assert city_info["name"] == "高崎　花子"
    assert city_info["birthdate"] == "1955-06-15"
    assert city_info["gender"] == "female"
    assert city_info["address"]["formatted"] == "群馬県高崎市高松町３５番地１"

    bus = login(server, browser, transport, device)
    bus_info = transport.userinfo(bus.access_token)
    assert set(bus_info) == {"sub", "age_over_18", "age_over_65"}
    assert bus_info == {"sub": bus.sub, "age_over_18": True, "age_over_65": True}
    assert not PROFILE_CLAIMS & set(bus.claims)

    assert city.sub != bus.sub  # different sectors: unlinkable pairwise subjects


def test_rps_sharing_a_sector_identifier_get_the_same_sub(server: RunningIdP, person: Any, rps: Any,  # type: ignore[no-untyped-def]
                                                          rp_host: RpHost, browser) -> None:
    _, transport = rps
    device = core.enrol(server, person)
    uris = [core.redirect_uri("127.0.0.1", 9, "/portal/cb"), core.redirect_uri("localhost", 9, "/clinic/cb")]
    sector = rp_host.put("/sector.json", uris)
    portal = RelyingParty.register(server.base_url, redirect_uri=uris[0], rp_category="municipal",
                                   sector_identifier_uri=sector, redirect_uris=uris, scope="openid profile")
    clinic = RelyingParty.register(server.base_url, redirect_uri=uris[1], rp_category="municipal",
                                   sector_identifier_uri=sector, redirect_uris=uris, scope="openid profile")
    assert rp_host.received("/sector.json", method="GET"), "the IdP did not fetch the sector document"
    a = login(server, browser, portal, device)
    b = login(server, browser, clinic, device)
    assert a.sub == b.sub
    # The sector identifier, not the redirect URI's host, decided it: a plain RP on the
    # clinic's host (localhost) gets another sub.
    assert b.sub != login(server, browser, transport, device).sub


def test_second_phone_with_the_same_card_keeps_the_sub(server: RunningIdP, person: Any, rps: Any) -> None:
    municipal, _ = rps
    old_phone = core.enrol(server, person)
    new_phone = core.enrol(server, person)
    assert new_phone.serial != old_phone.serial
    assert new_phone.finish_response.get("account_status", "existing") == "existing"
    with requests.Session() as first, requests.Session() as second:
        assert login(server, first, municipal, old_phone).sub == login(server, second, municipal, new_phone).sub


def test_prompt_none_after_a_login_is_silent(server: RunningIdP, person: Any, rps: Any, browser) -> None:  # type: ignore[no-untyped-def]
    municipal, _ = rps
    device = core.enrol(server, person)
    first = login(server, browser, municipal, device)
    location = municipal.start(browser, prompt="none")
    assert location.startswith(municipal.redirect_uri + "?"), location  # straight back, no page
    params = dict(parse_qsl(urlsplit(location).query))
    assert params["iss"] == server.base_url and "code" in params
    silent = municipal.finish(location)
    assert_device_login_token(silent, municipal, server)
    assert silent.sub == first.sub
    assert silent.claims["auth_time"] == first.claims["auth_time"]  # no new authentication happened


def test_an_individual_number_sent_by_an_rp_is_refused_and_not_stored(server: RunningIdP, person: Any,  # type: ignore[no-untyped-def]
                                                                      rps: Any, browser) -> None:
    municipal, _ = rps
    location = municipal.start(browser, login_hint=INDIVIDUAL_NUMBER)
    params = dict(parse_qsl(urlsplit(location).query))
    assert location.startswith(municipal.redirect_uri) and params["error"] == "invalid_request"
    # (the autouse fixture then scans the database)


def test_the_scan_finds_a_planted_individual_number(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The scan itself can fail: a number hidden in a text or JSON column is found."""
    engine = create_engine(f"sqlite:///{tmp_path / 'scan.sqlite3'}")
    with engine.begin() as connection:
        connection.execute(text('CREATE TABLE notes (id INTEGER, body VARCHAR(200), data JSON)'))
        connection.execute(text("INSERT INTO notes VALUES (1, 'nothing here 1234', '{\"a\": 1}')"))
        connection.execute(text(f"INSERT INTO notes VALUES (2, 'ok', '{{\"n\": \"{INDIVIDUAL_NUMBER}\"}}')"))
        connection.execute(text("INSERT INTO notes VALUES (3, 'my number 1234-5678-9018', NULL)"))
    found = core.individual_numbers_in(engine)
    assert [(table, column) for table, column, _ in found] == [("notes", "data"), ("notes", "body")]
    engine.dispose()
