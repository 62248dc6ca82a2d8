"""Settings.from_env: what a deployment may rely on (PROTOCOL §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from idp.settings import Settings, SettingsError

PROD = {"IDP_ISSUER": "https://id.example.jp"}


def load(**env: str) -> Settings:
    return Settings.from_env(env)


def test_defaults_are_a_development_deployment() -> None:
    s = load()
    assert s.issuer == "http://localhost:8000"
    assert s.development
    assert s.rp_id == "localhost"
    assert s.webauthn_origins == ("http://localhost:8000",)
    assert s.rate_limit_per_minute == 60
    assert s.allow_synced_keys and s.allow_http_loopback
    assert s.registration_token is None and s.jpki_crls is None and s.attestation_roots is None


def test_production_issuer() -> None:
    s = load(**PROD)
    assert not s.development
    assert s.rp_id == "id.example.jp"
    assert s.webauthn_origins == ("https://id.example.jp",)
    assert not s.allow_synced_keys and not s.allow_http_loopback


def test_trailing_slash_is_dropped_and_rp_id_ignores_port() -> None:
    s = load(IDP_ISSUER="https://id.example.jp:8443/")
    assert s.issuer == "https://id.example.jp:8443"
    assert s.rp_id == "id.example.jp"
    assert s.url("/token") == "https://id.example.jp:8443/token"


@pytest.mark.parametrize("issuer", ["http://localhost:8000", "http://127.0.0.1:5000", "http://[::1]:8000"])
def test_http_is_accepted_for_loopback_issuers(issuer: str) -> None:
    assert load(IDP_ISSUER=issuer).development


@pytest.mark.parametrize("issuer", [
    "http://id.example.jp",
    "ftp://id.example.jp",
    "https://id.example.jp?tenant=1",
    "https://id.example.jp#frag",
    "http://localhost:8000?x=1",
    "https://",
])
def test_bad_issuers_are_refused(issuer: str) -> None:
    with pytest.raises(SettingsError, match="IDP_ISSUER"):
        load(IDP_ISSUER=issuer)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_flags(value: str, expected: bool) -> None:
    assert load(**PROD, IDP_ALLOW_SYNCED_KEYS=value).allow_synced_keys is expected


def test_empty_flag_means_default() -> None:
    assert load(IDP_ALLOW_SYNCED_KEYS="").allow_synced_keys is True
    assert load(**PROD, IDP_ALLOW_SYNCED_KEYS="").allow_synced_keys is False


def test_development_flags_can_be_switched_off() -> None:
    s = load(IDP_ALLOW_SYNCED_KEYS="0", IDP_ALLOW_HTTP_LOOPBACK="0")
    assert not s.allow_synced_keys and not s.allow_http_loopback


def test_bad_flag_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="IDP_ALLOW_SYNCED_KEYS"):
        load(IDP_ALLOW_SYNCED_KEYS="maybe")


def test_http_loopback_is_refused_for_a_production_issuer() -> None:
    with pytest.raises(SettingsError, match="IDP_ALLOW_HTTP_LOOPBACK"):
        load(**PROD, IDP_ALLOW_HTTP_LOOPBACK="1")
    assert Settings.from_env({**PROD, "IDP_ALLOW_HTTP_LOOPBACK": "1"}, testing=True).allow_http_loopback


def test_webauthn_origins_are_split_trimmed_and_stripped() -> None:
    s = load(**PROD, IDP_WEBAUTHN_ORIGINS=" https://id.example.jp/ , https://app.example.jp,,")
    assert s.webauthn_origins == ("https://id.example.jp", "https://app.example.jp")


@pytest.mark.parametrize("origin", [
    "https://id.example.jp/login",  # a path is not an origin
    "http://id.example.jp",  # http only for loopback
    "id.example.jp",
])
def test_bad_webauthn_origins_are_refused(origin: str) -> None:
    with pytest.raises(SettingsError, match="IDP_WEBAUTHN_ORIGINS"):
        load(**PROD, IDP_WEBAUTHN_ORIGINS=origin)


def test_http_loopback_webauthn_origin_is_accepted() -> None:
    assert load(IDP_WEBAUTHN_ORIGINS="http://127.0.0.1:9000").webauthn_origins == ("http://127.0.0.1:9000",)


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("120", 120), (" 5 ", 5)])
def test_rate_limit(value: str, expected: int) -> None:
    assert load(IDP_RATE_LIMIT_PER_MINUTE=value).rate_limit_per_minute == expected


@pytest.mark.parametrize("value", ["-1", "ten", "1.5"])
def test_bad_rate_limit_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="IDP_RATE_LIMIT_PER_MINUTE"):
        load(IDP_RATE_LIMIT_PER_MINUTE=value)


def test_paths_and_optional_values(tmp_path: Path) -> None:
    s = load(IDP_KEYS_DIR=str(tmp_path / "k"), IDP_JPKI_CRLS=str(tmp_path / "crl"),
             IDP_REGISTRATION_TOKEN="tok", IDP_ATTESTATION_ROOTS=str(tmp_path / "roots"))
    assert s.keys_dir == tmp_path / "k"
    assert s.jpki_trust_anchors == tmp_path / "k" / "jpki"
    assert s.jpki_crls == tmp_path / "crl"
    assert s.attestation_roots == tmp_path / "roots"
    assert s.registration_token == "tok"


def test_config_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "idp.toml"
    config.write_text('IDP_ISSUER = "https://id.example.jp"\n'
                      'IDP_RATE_LIMIT_PER_MINUTE = 30\n'
                      'IDP_REGISTRATION_TOKEN = "from-file"\n'
                      'OTHER = "ignored"\n')
    s = load(IDP_CONFIG=str(config), IDP_REGISTRATION_TOKEN="from-env")
    assert s.issuer == "https://id.example.jp"
    assert s.rate_limit_per_minute == 30
    assert s.registration_token == "from-env"


def test_broken_config_file_names_it(tmp_path: Path) -> None:
    config = tmp_path / "idp.toml"
    config.write_text("IDP_ISSUER = \n")
    with pytest.raises(SettingsError, match="IDP_CONFIG"):
        load(IDP_CONFIG=str(config))
    with pytest.raises(SettingsError, match="IDP_CONFIG"):
        load(IDP_CONFIG=str(tmp_path / "missing.toml"))


def test_config_file_boolean_flag(tmp_path: Path) -> None:
    config = tmp_path / "idp.toml"
    config.write_text("IDP_ALLOW_SYNCED_KEYS = true\n")
    assert load(IDP_CONFIG=str(config), **PROD).allow_synced_keys is True
