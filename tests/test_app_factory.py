"""create_app refuses to start a production issuer without its keys or with a weak secret."""

from __future__ import annotations

import pytest

from idp import create_app
from idp.context import initialise
from idp.keystore import KeyStoreError
from idp.settings import Settings


def _settings(tmp_path, **env: str) -> Settings:
    base = {"IDP_ISSUER": "https://id.example.jp", "IDP_KEYS_DIR": str(tmp_path / "keys"),
            "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    return Settings.from_env({**base, **env})


def test_production_issuer_without_keys_refuses_to_start(tmp_path):
    with pytest.raises((FileNotFoundError, KeyStoreError)):
        create_app(_settings(tmp_path))


def test_weak_secret_refused_outside_development(tmp_path):
    settings = _settings(tmp_path, IDP_SECRET_KEY="short")
    initialise(settings)
    with pytest.raises(ValueError, match="IDP_SECRET_KEY"):
        create_app(settings)


def test_initialised_production_deployment_starts_without_test_jpki_ca(tmp_path):
    settings = _settings(tmp_path)
    created = initialise(settings)
    assert not any("TEST JPKI" in item for item in created)  # the demo CA exists in development only
    app = create_app(settings)
    metadata = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert metadata["issuer"] == "https://id.example.jp"
    assert initialise(settings) == []  # idempotent: nothing created, nothing printed


def test_broken_policy_file_names_the_line(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "x"\n[categories.medical]\nclaims = name\n')
    settings = _settings(tmp_path, IDP_POLICY_FILE=str(policy))
    initialise(settings)
    with pytest.raises(ValueError, match="line"):
        create_app(settings)
