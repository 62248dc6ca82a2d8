"""Which claims an RP gets (PROTOCOL §5, §6) and their values."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from idp.oidc.claims import ClaimsRequestError, claim_values, parse_claims_parameter, plan_release
from idp.policy import load_policy
from idp.storage.models import Account

POLICY = load_policy()
ALL = ("name", "birthdate", "gender", "address", "age_over_18", "age_over_65")
# 2026-03-31T15:00Z is midnight on 2026-04-01 in Japan.
JST_MIDNIGHT = datetime(2026, 3, 31, 15, 0, tzinfo=timezone.utc)
JUST_BEFORE = datetime(2026, 3, 31, 14, 59, 59, tzinfo=timezone.utc)


def account(**overrides: object) -> Account:
    values = dict(id="acct-1", name="山田\u3000太郎", name_substitution="0000", gender="1",
                  date_of_birth="419900115", address="東京都千代田区千代田1-1", address_substitution="",
                  verified_at=datetime(2026, 1, 1, tzinfo=timezone.utc), attributes_current=True)
    values.update(overrides)
    return Account(**values)


@pytest.mark.parametrize(("category", "expected"), [
    ("municipal", {"name", "address", "birthdate", "gender"}),
    ("medical", {"name", "birthdate", "gender"}),
    ("financial", {"name", "address", "birthdate", "gender"}),
    ("transport", {"age_over_18", "age_over_65"}),
])
def test_scopes_within_the_category_policy(category: str, expected: set[str]) -> None:
    release = plan_release("openid profile address", None, POLICY[category])
    assert release.userinfo == expected
    assert release.id_token == frozenset()


def test_transport_asking_profile_gets_only_age_flags() -> None:
    assert plan_release("openid profile", None, POLICY["transport"]).all == {"age_over_18", "age_over_65"}


def test_transport_without_birthdate_gets_nothing() -> None:
    assert plan_release("openid address", None, POLICY["transport"]).all == frozenset()


def test_openid_alone_releases_nothing() -> None:
    assert plan_release("openid", None, POLICY["municipal"]).all == frozenset()


def test_claims_parameter_places_claims() -> None:
    request = {"id_token": {"name": None, "birthdate": {"essential": True}},
               "userinfo": {"address": None, "email": None}}
    release = plan_release("openid", request, POLICY["municipal"])
    assert release.id_token == {"name", "birthdate"}
    assert release.userinfo == {"address"}


def test_claims_parameter_is_filtered_by_policy() -> None:
    request = {"id_token": {"address": None, "name": None, "birthdate": None}}
    assert plan_release("openid", request, POLICY["medical"]).id_token == {"name", "birthdate"}
    assert plan_release("openid", request, POLICY["transport"]).id_token == {"age_over_18", "age_over_65"}


def test_parse_claims_parameter() -> None:
    assert parse_claims_parameter(None) is None
    assert parse_claims_parameter("") is None
    parsed = parse_claims_parameter('{"id_token": {"name": null}, "userinfo": {"gender": {}}, "x": 1}')
    assert parsed == {"id_token": {"name": None}, "userinfo": {"gender": {}}}


@pytest.mark.parametrize("raw", [
    "{not json",
    "[]",
    '"name"',
    '{"id_token": ["name"]}',
    '{"userinfo": {"name": true}}',
    '{"id_token": {"name": "yes"}}',
    '{"userinfo": {"name": null, "pad": "' + "x" * 9000 + '"}}',
])
def test_parse_claims_parameter_errors(raw: str) -> None:
    with pytest.raises(ClaimsRequestError):
        parse_claims_parameter(raw)


def test_values() -> None:
    values = claim_values(account(), ALL, now=JST_MIDNIGHT)
    assert values == {
        "name": "山田\u3000太郎",
        "birthdate": "1990-01-15",
        "gender": "male",
        "address": {"formatted": "東京都千代田区千代田1-1"},
        "age_over_18": True,
        "age_over_65": False,
    }


def test_only_requested_names() -> None:
    assert claim_values(account(), ["gender"], now=JST_MIDNIGHT) == {"gender": "male"}


@pytest.mark.parametrize(("code", "expected"), [("1", "male"), ("2", "female")])
def test_gender(code: str, expected: str) -> None:
    assert claim_values(account(gender=code), ["gender"])["gender"] == expected


def test_unknown_gender_is_omitted() -> None:
    assert claim_values(account(gender="3"), ["gender", "name"]) == {"name": "山田\u3000太郎"}


def test_unknown_birthdate_is_omitted_with_age_flags() -> None:
    values = claim_values(account(date_of_birth="000000000"), ALL, now=JST_MIDNIGHT)
    assert "birthdate" not in values and "age_over_18" not in values
    assert values["name"]


@pytest.mark.parametrize(("dob", "claim"), [("420080401", "age_over_18"), ("319610401", "age_over_65")])
def test_age_flags_turn_at_midnight_japan_time(dob: str, claim: str) -> None:
    a = account(date_of_birth=dob)
    assert claim_values(a, [claim], now=JUST_BEFORE) == {claim: False}
    assert claim_values(a, [claim], now=JST_MIDNIGHT) == {claim: True}


def test_withheld_when_attributes_are_not_current() -> None:
    assert claim_values(account(attributes_current=False), ALL, now=JST_MIDNIGHT) == {}


def test_financial_rp_can_ask_for_verified_claims() -> None:
    request = {"userinfo": {"verified_claims": {"verification": {"trust_framework": None},
                                                "claims": {"name": None}}}}
    assert "verified_claims" in plan_release("openid", request, POLICY["financial"]).userinfo
