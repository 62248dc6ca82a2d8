"""Category policies and privacy by design, end to end over HTTP (issue 6, PROTOCOL §5–6).

Each category receives exactly its policy's claims; a bank gets ``verified_claims`` that
validate against the IDA schema without any JPKI serial; financial requests without PAR
or private_key_jwt are refused; consent is asked again when scope, purpose or policy
change and withdrawal takes effect at once; two colluding RPs of different sectors share
no linking value; no individual number reaches the database, the logs or a response.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import requests
from sqlalchemy import String, Text, inspect, select

from idp.consent import withdraw_consent
from idp.policy import ACR_ORDER, load_policy
from idp.privacy import contains_individual_number
from idp.storage.models import Consent
from tests.support.rp import AuthorizationError, RelyingParty, RPError, browser_login

SCHEMA = Path(__file__).parent / "data" / "ida_verified_claims.schema.json"
VALID_NUMBER = "123456789018"  # check digit valid (see tests/test_privacy.py)


def _rp(idp: Any, category: str, host: str = "127.0.0.1", **metadata: Any) -> RelyingParty:
    method = "private_key_jwt" if category == "financial" else "client_secret_basic"
    return RelyingParty.register(idp.base_url, redirect_uri=f"http://{host}:9/{category}/cb",
                                 rp_category=category, token_endpoint_auth_method=method,
                                 scope="openid profile address", **metadata)


@pytest.fixture(scope="module")
def person(idp: Any) -> Any:
    wallet = idp.wallet()
    return wallet, wallet.enroll(idp.card())


def _login(idp: Any, rp: RelyingParty, person: Any, browser: requests.Session, *, consent: str | None = "allow",
           **extra: Any):  # type: ignore[no-untyped-def]
    wallet, enrolled = person
    location = rp.start(browser, **extra)
    callback = browser_login(browser, idp.base_url, location, wallet, enrolled, consent=consent)
    return rp.finish(callback)


@pytest.mark.parametrize("category, expected", [
    ("municipal", {"sub", "name", "birthdate", "gender", "address"}),
    ("medical", {"sub", "name", "birthdate", "gender"}),
    ("financial", {"sub", "name", "birthdate", "gender", "address"}),
    ("transport", {"sub", "age_over_18", "age_over_65"}),
])
def test_each_category_receives_exactly_its_claims(idp, person, browser, category, expected):
    rp = _rp(idp, category)
    result = _login(idp, rp, person, browser)
    userinfo = rp.userinfo(result.access_token)
    assert set(userinfo) == expected
    if category == "transport":
        assert userinfo["age_over_18"] is True and userinfo["age_over_65"] is False
    assert not set(result.claims) & {"name", "address", "birthdate", "gender"}  # scope claims stay at userinfo


VERIFIED_REQUEST = {"verified_claims": {
    "verification": {"trust_framework": None},
    "claims": {"name": None, "birthdate": {"purpose": "Required by the AML act"}, "address": None, "gender": None},
}}


def test_financial_rp_gets_schema_valid_verified_claims_without_jpki_serial(idp, person, browser):
    rp = _rp(idp, "financial")
    result = _login(idp, rp, person, browser,
                    claims={"userinfo": VERIFIED_REQUEST, "id_token": VERIFIED_REQUEST})
    userinfo = rp.userinfo(result.access_token)
    for released in (userinfo, result.claims):
        jsonschema.validate({"verified_claims": released["verified_claims"]}, json.loads(SCHEMA.read_text()))
        verification = released["verified_claims"]["verification"]
        assert verification["trust_framework"] == "jp_aml"
        evidence = verification["evidence"][0]
        assert evidence["type"] == "electronic_signature" and evidence["issuer"] == "J-LIS"
        assert released["verified_claims"]["claims"]["name"] == userinfo["name"]
    text = json.dumps([userinfo, result.claims, result.token]).lower()
    for card in idp.issued_cards:  # no JPKI serial, in hex or decimal, anywhere the RP looks
        assert format(card.serial_number, "x") not in text
        assert str(card.serial_number) not in text


def test_verified_claims_evidence_reference_is_pairwise(idp, person, browser):
    one = _rp(idp, "financial", host="127.0.0.1")
    other = _rp(idp, "financial", host="localhost")
    refs = []
    for rp in (one, other):
        result = _login(idp, rp, person, browser, claims={"userinfo": VERIFIED_REQUEST})
        refs.append(rp.userinfo(result.access_token)["verified_claims"]["verification"]["evidence"][0]["serial_number"])
    assert refs[0] != refs[1]


def test_verified_claims_request_shape_and_purpose_are_checked(idp, person, browser):
    rp = _rp(idp, "financial")
    bad = {"userinfo": {"verified_claims": {"verification": {}, "claims": {"name": {"purpose": "no"}}}}}
    with pytest.raises(RPError) as refused:  # validated when pushed (RFC 9126 §2.3)
        rp.start(browser, claims=bad)
    assert refused.value.error == "invalid_request"
    with pytest.raises(RPError):
        rp.start(browser, claims={"userinfo": {"verified_claims": {"verification": {}, "claims": {}}}})
    with pytest.raises(RPError):
        rp.start(browser, purpose="x" * 301)


def test_financial_requests_need_par_and_private_key_jwt(idp, browser):
    with pytest.raises(RPError) as refused:
        RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="financial",
                              token_endpoint_auth_method="client_secret_basic")
    assert refused.value.error == "invalid_client_metadata"
    rp = _rp(idp, "financial")
    location = rp.start(browser, par=False)
    with pytest.raises(AuthorizationError) as error:
        rp.parse_callback(location)
    assert error.value.error == "invalid_request" and "pushed" in (error.value.description or "")


def test_consent_asked_again_when_scope_purpose_or_policy_change(idp, person, browser, tmp_path):
    rp = _rp(idp, "municipal")
    _login(idp, rp, person, browser, scope="openid profile")
    _login(idp, rp, person, browser, consent=None, scope="openid profile")  # remembered: no page
    _login(idp, rp, person, browser, scope="openid profile address")  # more claims: asked again
    _login(idp, rp, person, browser, scope="openid profile address", purpose="Tax notices")  # new purpose
    services = idp.services()
    original = services.policy
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('version = "changed"\n[categories.municipal]\naccess_token_lifetime = 300\n')
    services.policy = load_policy(policy_file, development=True)
    try:
        _login(idp, rp, person, browser, scope="openid profile address", purpose="Tax notices")  # new policy
        _login(idp, rp, person, browser, consent=None, scope="openid profile address", purpose="Tax notices")
    finally:
        services.policy = original


def test_withdrawal_takes_effect_at_once(idp, person, browser):
    rp = _rp(idp, "medical", grant_types=["authorization_code", "refresh_token"])
    result = _login(idp, rp, person, browser, scope="openid profile offline_access", prompt="consent")
    assert result.token.get("refresh_token")
    with idp.services().db.transaction() as session:
        consent = session.scalars(select(Consent).where(Consent.client_id == rp.client_id)).one()
        assert withdraw_consent(session, consent.account_id, rp.client_id)
    with pytest.raises(RPError):
        rp.userinfo(result.access_token)
    refreshed = rp.token_request({"grant_type": "refresh_token", "refresh_token": result.token["refresh_token"]})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    location = rp.start(browser, prompt="none")
    with pytest.raises(AuthorizationError) as error:
        rp.parse_callback(location)
    assert error.value.error == "consent_required"


SERVER_LOGGERS = {"idp", "flask", "authlib", "sqlalchemy", "alembic", "gunicorn", "flask_limiter"}


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """The IdP's own logs (the test's HTTP client and test server access log are scaffolding)."""
        if record.name.split(".")[0] in SERVER_LOGGERS:
            self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = _Collector()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


SHARED_BY_DESIGN = {"Bearer", "openid profile address", "JWT", "ES256", "RS256", "hwk", "user"}


def test_two_rps_of_different_sectors_cannot_link_the_person(idp, browser, log_lines):
    wallet = idp.wallet()
    person = (wallet, wallet.enroll(idp.card()))
    seen: dict[str, list[Any]] = {}
    for name, category, host in (("city", "municipal", "127.0.0.1"), ("bus", "transport", "localhost")):
        rp = _rp(idp, category, host=host, backchannel_logout_uri=f"http://{host}:9/logout")
        with requests.Session() as own_browser, requests.Session() as fresh:
            result = _login(idp, rp, person, own_browser)  # separate logins, as unrelated sites see them
            denied = rp.start(fresh, prompt="none")  # an error response (login_required)
        seen[name] = [result.token, result.claims, result.header, rp.userinfo(result.access_token),
                      rp.introspect(result.access_token), denied]
    op_values = {idp.settings.issuer, *ACR_ORDER, *(k["kid"] for k in idp.services().keystore.public_jwks()["keys"])}
    city = set(_strings(seen["city"])) - SHARED_BY_DESIGN - op_values
    bus = set(_strings(seen["bus"])) - SHARED_BY_DESIGN - op_values
    consented_to_both: set[str] = set()  # the transport RP receives no personal attribute at all
    assert (city & bus) - consented_to_both == set()
    for name in seen:
        for value in _strings(seen[name]):
            assert "acct-" not in value  # the internal account id never leaves the IdP
    assert not any(contains_individual_number(v) for v in list(city | bus) + log_lines)


def test_individual_numbers_are_refused_everywhere(idp, person, browser, log_lines):
    with pytest.raises(RPError) as registration:
        RelyingParty.register(idp.base_url, redirect_uri="http://127.0.0.1:9/cb", rp_category="municipal",
                              client_name=f"City {VALID_NUMBER}")
    assert registration.value.error == "invalid_client_metadata"
    rp = _rp(idp, "municipal")
    location = rp.start(browser, login_hint=VALID_NUMBER)
    with pytest.raises(AuthorizationError) as hint:
        rp.parse_callback(location)
    assert hint.value.error == "invalid_request"
    wallet, _ = person
    start = wallet.begin()
    refused = wallet.post("/enroll/finish", {"enrollment_id": start.enrollment_id, "my_number": VALID_NUMBER})
    assert refused.status_code == 400 and "individual number" in refused.json()["error_description"]
    assert VALID_NUMBER not in "\n".join(log_lines)
    assert VALID_NUMBER not in refused.text


def test_no_individual_number_in_the_database(idp, person, browser):
    """Scan every text column of every table after the flows above."""
    _login(idp, _rp(idp, "municipal"), person, browser)
    engine = idp.services().db.engine
    inspector = inspect(engine)
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            columns = [c["name"] for c in inspector.get_columns(table)
                       if isinstance(c["type"], (String, Text)) or "JSON" in str(c["type"]).upper()]
            for column in columns:
                for (value,) in connection.exec_driver_sql(f'SELECT "{column}" FROM "{table}"'):
                    assert not contains_individual_number(value if not isinstance(value, bytes) else ""), \
                        f"{table}.{column}"
