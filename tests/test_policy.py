"""Category policies (PROTOCOL §5): defaults, operator overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from idp.policy import ACR_DEVICE, ACR_DEVICE_UV, CATEGORIES, PolicyError, load_policy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_protocol() -> None:
    policy = load_policy()
    assert set(policy.categories) == set(CATEGORIES)
    assert policy["municipal"].claims == {"name", "address", "birthdate", "gender"}
    assert policy["medical"].claims == {"name", "birthdate", "gender"}
    assert policy["financial"].claims == {"name", "address", "birthdate", "gender", "verified_claims"}
    assert policy["transport"].claims == {"age_over_18", "age_over_65"}
    assert policy["transport"].age_thresholds == (18, 65)
    assert policy["financial"].token_endpoint_auth_methods == ("private_key_jwt",)
    assert policy["financial"].require_par and not policy["municipal"].require_par
    assert policy["medical"].acr == ACR_DEVICE_UV and policy["municipal"].acr == ACR_DEVICE
    assert policy.version.startswith("2026-11-25.1+")


def test_override_merges_into_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[categories.municipal]\nclaims = ["name"]\naccess_token_lifetime = 120\n')
    policy = load_policy(path)
    assert policy["municipal"].claims == {"name"}
    assert policy["municipal"].access_token_lifetime == 120
    assert policy["municipal"].refresh_tokens is True  # untouched keys keep the default
    assert policy["medical"] == load_policy()["medical"]


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[categories.municipal]\nclaims = ["name"\nacr = 1\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="missing.toml"):
        load_policy(tmp_path / "missing.toml")


@pytest.mark.parametrize(("text", "key"), [
    ('[categories.sports]\nclaims = ["name"]\n', "categories.sports"),
    ('[categories.municipal]\nclaims = ["email"]\n', "categories.municipal.claims"),
    ('[categories.municipal]\nclaims = "name"\n', "categories.municipal.claims"),
    ('[categories.medical]\nclaims = ["name", "verified_claims"]\n', "categories.medical.claims"),
    ('[categories.medical]\nacr = "urn:example:loa:1"\n', "categories.medical.acr"),
    ('[categories.transport]\naccess_token_lifetime = 10\n', "categories.transport.access_token_lifetime"),
    ('[categories.transport]\naccess_token_lifetime = 90000\n', "categories.transport.access_token_lifetime"),
    ('[categories.transport]\naccess_token_lifetime = true\n', "categories.transport.access_token_lifetime"),
    ('[categories.transport]\nrefresh_token_lifetime = 40000000\n', "categories.transport.refresh_token_lifetime"),
    ('[categories.financial]\nrequire_par = "yes"\n', "categories.financial.require_par"),
    ('[categories.financial]\ntoken_endpoint_auth_methods = []\n',
     "categories.financial.token_endpoint_auth_methods"),
    ('[categories.financial]\ntoken_endpoint_auth_methods = ["tls_client_auth"]\n',
     "categories.financial.token_endpoint_auth_methods"),
    ('[categories.financial]\npkce_required = false\n', "categories.financial.pkce_required"),
])
def test_semantic_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_age_over_claims_are_accepted(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, '[categories.transport]\nclaims = ["age_over_20", "age_over_75"]\n'))
    assert policy["transport"].age_thresholds == (20, 75)


def test_version_follows_the_content(tmp_path: Path) -> None:
    default = load_policy()
    assert load_policy().version == default.version
    same = load_policy(write(tmp_path, '[categories.medical]\nclaims = ["gender", "name", "birthdate"]\n'))
    assert same.version == default.version
    changed = load_policy(write(tmp_path, '[categories.medical]\nclaims = ["name"]\n'))
    assert changed.version != default.version
    assert changed.version.split("+")[0] == default.version.split("+")[0]  # even without a version bump
    bumped = load_policy(write(tmp_path, 'version = "2027-01-01.1"\n'))
    assert bumped.version.startswith("2027-01-01.1+")


def test_misspelt_top_level_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="category"):
        load_policy(write(tmp_path, '[category.medical]\nclaims = ["name"]\n'))


def test_non_string_auth_method_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="token_endpoint_auth_methods"):
        load_policy(write(tmp_path, '[categories.medical]\ntoken_endpoint_auth_methods = [{a = 1}]\n'))
