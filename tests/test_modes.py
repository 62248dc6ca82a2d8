"""Development and production are separate modes (PROTOCOL §7.6).

- ``idp init`` in development keeps its TEST JPKI CA in its own files under the keys
  folder and never writes to an operator's configured input (anchors file or folder, CRLs).
- The same keys folder under an https issuer trusts nothing made for development: a card
  of the deployment's TEST CA is refused, the test card policy OID is refused, and
  ``idp serve`` will not start when the operator's anchors contain that TEST root.
- Outside development ``idp serve`` with missing keys exits with one line, creating nothing.
- ``idp keys rotate --grace`` must be positive and longer than the key schedule's re-read
  interval; outside development ``idp serve`` never creates signing keys in the database.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from idp.context import jpki_trust, development_jpki_folder
from idp.proofing import jpki
from idp.proofing.demo_card import TestJpkiCA, cached_key
from idp.settings import Settings, SettingsError
from tests.support.lifecycle import run_cli
from tests.support.server import command_env, idp_command

HTTPS_ISSUER = "https://id.example.jp"
SECRET = "s" * 48


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content digest (to prove nothing changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(idp_command(*args), env=command_env(env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idp: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def operator(tmp_path_factory, jpki_ca: TestJpkiCA) -> Path:
    """An operator's inputs: an anchors folder, an anchors file and a CRL file."""
    root = tmp_path_factory.mktemp("operator")
    (root / "anchors").mkdir()
    pem = jpki_ca.certificate.public_bytes(Encoding.PEM)
    (root / "anchors" / "jlis-root.pem").write_bytes(pem)
    (root / "anchors.pem").write_bytes(pem)
    (root / "jpki.crl").write_bytes(jpki_ca.crl([]).public_bytes(Encoding.DER))
    return root


@pytest.mark.parametrize("anchors", ["anchors", "anchors.pem"])
def test_init_in_development_leaves_the_operators_inputs_byte_for_byte(tmp_path, operator, anchors) -> None:
    before = _tree(operator)
    env = {"IDP_KEYS_DIR": str(tmp_path / "keys"), "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
           "IDP_JPKI_TRUST_ANCHORS": str(operator / anchors), "IDP_JPKI_CRLS": str(operator / "jpki.crl")}
    for _ in range(2 if anchors == "anchors" else 1):  # and again, idempotent
        result = _run("init", env=env)
        assert result.returncode == 0, result.stderr
    assert _tree(operator) == before
    assert (tmp_path / "keys" / "jpki-test" / "ca.pem").exists()  # the TEST CA lives in its own files


def _https_settings(keys: Path, anchors: Path | None) -> Settings:
    env = {"IDP_ISSUER": HTTPS_ISSUER, "IDP_KEYS_DIR": str(keys), "IDP_SECRET_KEY": SECRET,
           "IDP_JPKI_TRUST_ANCHORS": str(anchors or keys / "no-anchors")}
    return Settings.from_env(env)


def test_the_same_keys_under_an_https_issuer_trust_no_test_card(tmp_path, operator, jpki_ca) -> None:
    keys = tmp_path / "keys"
    env = {"IDP_KEYS_DIR": str(keys), "IDP_INSTANCE_DIR": str(tmp_path / "instance")}
    assert _run("init", env=env).returncode == 0
    dev_ca = TestJpkiCA.load(development_jpki_folder(_https_settings(keys, None)))
    invented = dev_ca.issue_card(key=cached_key("modes-card")).certificate_der

    # Development trusts the TEST root of keys/jpki-test (that is what the demo is for) ...
    dev = Settings.from_env({"IDP_KEYS_DIR": str(keys), "IDP_JPKI_TRUST_ANCHORS": str(operator / "anchors")})
    assert jpki_trust(dev).verify(invented)
    # ... the https issuer does not: the card does not chain to any trusted root,
    with pytest.raises(jpki.JpkiError) as untrusted:
        jpki_trust(_https_settings(keys, operator / "anchors")).verify(invented)
    assert untrusted.value.code == "untrusted_issuer"
    # and a test card is refused for its policy OID even where its root is trusted.
    card = jpki_ca.issue_card(key=cached_key("modes-card")).certificate_der
    with pytest.raises(jpki.JpkiError) as test_policy:
        jpki_trust(_https_settings(keys, operator / "anchors")).verify(card)
    assert test_policy.value.code == "bad_policy"
    # An operator who copies the TEST root into the anchors gets a refusal to start.
    anchors = tmp_path / "anchors"
    shutil.copytree(operator / "anchors", anchors)
    shutil.copy(keys / "jpki-test" / "ca.pem", anchors / "copied.pem")
    with pytest.raises(SettingsError, match="TEST JPKI root"):
        jpki_trust(_https_settings(keys, anchors))
    refused = _run("serve", "--port", "9", env={"IDP_ISSUER": HTTPS_ISSUER, "IDP_KEYS_DIR": str(keys),
                                                "IDP_SECRET_KEY": SECRET, "IDP_JPKI_TRUST_ANCHORS": str(anchors),
                                                "IDP_INSTANCE_DIR": str(tmp_path / "instance")})
    assert "TEST JPKI root" in _one_line(refused)


@pytest.mark.parametrize("keys_state", ["missing", "empty"])
def test_serve_with_https_issuer_and_no_keys_refuses_in_one_line_and_creates_nothing(tmp_path, keys_state) -> None:
    keys = tmp_path / "keys"
    if keys_state == "empty":
        keys.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _run("serve", "--port", "9", env={"IDP_ISSUER": HTTPS_ISSUER, "IDP_KEYS_DIR": str(keys),
                                               "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
                                               "IDP_SECRET_KEY": SECRET})
    line = _one_line(result)
    assert "refusing to start" in line and "signing keys" in line and "pairwise salt" in line and "CA" in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _schedule(idp) -> list[tuple]:
    from sqlalchemy import select

    from idp.storage.models import SigningKey

    with idp.services().db.sessions() as session:
        return sorted(session.execute(select(SigningKey.kid, SigningKey.use_after, SigningKey.retire_after)).all())


@pytest.mark.parametrize("grace, refusal", [("0", "--grace must be a positive"), ("-60", "--grace must be a positive"),
                                            ("1", "longer than IDP_KEYS_REFRESH_SECONDS")])
def test_key_rotation_grace_must_outlast_the_refresh_interval(idp, monkeypatch, grace, refusal) -> None:
    """Positive, and longer than the instances' re-read interval (1 s here): otherwise an
    instance could sign with a key another one does not publish yet."""
    before = _schedule(idp)
    result = run_cli(idp, monkeypatch, "keys", "rotate", f"--grace={grace}")
    assert refusal in result.error_line
    assert _schedule(idp) == before


def test_https_serve_on_a_database_without_signing_keys_refuses_in_one_line(tmp_path) -> None:
    """A complete keys folder but a database whose schedule is empty (and no earlier
    version's index to import): outside development ``idp serve`` creates no key."""
    keys = tmp_path / "keys"
    env = {"IDP_KEYS_DIR": str(keys), "IDP_INSTANCE_DIR": str(tmp_path / "instance"), "IDP_SECRET_KEY": SECRET}
    assert _run("init", env={**env, "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'first.sqlite3'}"}).returncode == 0
    line = _one_line(_run("serve", "--port", "9", env={**env, "IDP_ISSUER": HTTPS_ISSUER,
                                                        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}"}))
    assert "refusing to start" in line and "no ID token signing keys in the database" in line and "idp init" in line
