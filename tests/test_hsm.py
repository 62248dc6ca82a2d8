"""Keys in a hardware security module (PROTOCOL §7.5), with SoftHSM2 as the token.

A real ``idp init`` then a real ``idp serve`` (gunicorn workers, which must each open
the token again after the fork) with ``IDP_PKCS11_*`` set: ID tokens verify against the
JWKS, device certificates, CRLs and OCSP responses verify against the CA certificate
and pass pkilint, ``idp keys rotate`` rotates in the token, and no private key is ever
written under ``IDP_KEYS_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pkcs11 import Attribute, KeyType

from idp import cli
from idp.proofing.demo_card import TestJpkiCA
from idp.settings import Pkcs11Config
from idp.signing import KeyBackendError
from idp.signing.pkcs11 import Pkcs11KeyBackend, TokenEcKey
from tests.support import core
from tests.support.lifecycle import ocsp_request, post_ocsp
from tests.support.server import ServedIdP, command_env, fresh_database, idp_command, serve_idp
from tests.support.softhsm import PIN, SoftHsm, shared_softhsm
from tests.test_ca import lint_certificate_der, lint_crl_der, lint_ocsp_der

PRIVATE_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return shared_softhsm(tmp_path_factory)


def run_idp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(idp_command(*args), env=command_env(env), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA, softhsm: SoftHsm) -> Iterator[ServedIdP]:
    tmp = tmp_path_factory.mktemp("hsm-serve")
    with fresh_database(tmp / "db") as database_url:
        env = {**softhsm.token("serve"), "IDP_KEYS_DIR": str(tmp / "keys"), "IDP_DATABASE_URL": database_url,
               "IDP_INSTANCE_DIR": str(tmp / "instance"), "IDP_ISSUER": "http://127.0.0.1:9"}
        init = run_idp(env, "init")
        assert init.returncode == 0, init.stderr
        assert "ID token signing keys" in init.stdout and "CA key" in init.stdout
        env.pop("IDP_ISSUER")
        with serve_idp(tmp, jpki_ca, env=env) as server:
            yield server


def private_keys_under(folder: Path) -> list[str]:
    """Files holding a private key: a PEM private key block or a JWK with a private member."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file() or "jpki-test" in path.parts:  # the development demo's TEST card issuer
            continue
        data = path.read_bytes()
        if PRIVATE_PEM.search(data):
            found.append(str(path))
            continue
        with contextlib.suppress(ValueError):
            document = json.loads(data)
            keys = document if isinstance(document, list) else [document]
            if any(isinstance(k, dict) and {"d", "p", "q"} & set(k) for k in keys):
                found.append(str(path))
    return found


def test_init_serve_and_rotate_in_the_token_with_nothing_private_on_disk(served: ServedIdP, browser) -> None:
    """One deployment, checked in order (a second ``init`` + ``serve`` would double the cost)."""
    check_tokens_certificates_crls_and_ocsp(served, browser)
    check_keys_rotate_in_the_token(served)
    assert (served.keys_dir / "ca" / "ca.cert.pem").exists()
    assert private_keys_under(served.keys_dir) == []


def check_tokens_certificates_crls_and_ocsp(served: ServedIdP, browser: requests.Session) -> None:
    device = core.enrol(served)
    result = core.login(served, browser, core.register(served, "municipal"), device)  # the RP checks the JWKS
    assert result.header["kid"] in {key["kid"] for key in requests.get(served.url("/jwks"), timeout=10).json()["keys"]}
    ca = x509.load_der_x509_certificate(requests.get(served.url("/ca/certificate"), timeout=10).content)
    device.certificate.verify_directly_issued_by(ca)
    assert lint_certificate_der(device.certificate_der) == []
    revoked = run_idp(served.env, "ca", "revoke", device.serial, "--reason", "keyCompromise")
    assert revoked.returncode == 0, revoked.stderr
    crl_der = requests.get(served.url("/ca/crl"), timeout=10).content
    crl = x509.load_der_x509_crl(crl_der)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(device.certificate.serial_number) is not None
    assert lint_crl_der(crl_der) == []
    response = post_ocsp(served, ocsp_request(device.certificate, ca))
    ca.public_key().verify(response.signature, response.tbs_response_bytes,  # type: ignore[call-arg]
                           ec.ECDSA(response.signature_hash_algorithm))  # type: ignore[arg-type]
    assert lint_ocsp_der(response.public_bytes(Encoding.DER)) == []


def check_keys_rotate_in_the_token(served: ServedIdP) -> None:
    before = {key["kid"] for key in requests.get(served.url("/jwks"), timeout=10).json()["keys"]}
    rotated = run_idp(served.env, "keys", "rotate", "--grace", "2")  # longer than the 1 s re-read interval
    assert rotated.returncode == 0, rotated.stderr
    device = core.enrol(served)
    rp = core.register(served, "municipal")
    deadline = time.monotonic() + 15
    while True:  # each worker re-reads the key schedule within seconds
        result = core.login(served, requests.Session(), rp, device)
        if result.header["kid"] not in before or time.monotonic() > deadline:
            break
        time.sleep(1)
    after = {key["kid"] for key in requests.get(served.url("/jwks"), timeout=10).json()["keys"]}
    assert result.header["kid"] in after - before
    assert before <= after  # the old keys stay published until every token they signed expired


def test_a_token_key_signs_but_never_exports(softhsm: SoftHsm) -> None:
    env = softhsm.token("unit")
    backend = Pkcs11KeyBackend(Pkcs11Config(env["IDP_PKCS11_MODULE"], env["IDP_PKCS11_TOKEN"], PIN))
    key = backend.generate_ca_key()
    assert isinstance(key, TokenEcKey)
    with pytest.raises(TypeError, match="never exported"):
        key.private_numbers()
    with pytest.raises(KeyBackendError, match="already holds a CA key"):
        backend.generate_ca_key()
    signing, sealed = backend.generate_signing_key("RS256")
    assert sealed is None  # the token holds it; the database keeps only the public half
    with pytest.raises(KeyBackendError, match="sealed for a keys folder"):
        backend.signing_key(signing.kid, "a.sealed.key.from.files")  # type: ignore[arg-type]
    backend.delete_signing_key(signing.kid)  # type: ignore[arg-type]
    with backend.token.lock:  # a key that could leave the token is not used as an HSM key
        backend.token.session().generate_keypair(
            KeyType.RSA, 2048, store=True, id=b"exportable", label="exportable",
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.SIGN: True})
    with pytest.raises(KeyBackendError, match="not an HSM-protected key"):
        backend.signing_key("exportable", None)
    with pytest.raises(KeyBackendError, match="no single private key"):
        backend.signing_key(signing.kid, None)  # type: ignore[arg-type]


def test_wrong_pin_or_token_stops_init_with_one_line(softhsm: SoftHsm, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    env = {**softhsm.token("pin"), "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}", "IDP_ISSUER": "http://127.0.0.1:9"}
    for override, expected in (({"IDP_PKCS11_TOKEN": "absent"}, "no such token"),
                               ({"IDP_PKCS11_PIN_FILE": None, "IDP_PKCS11_PIN": "000000"}, "PinIncorrect")):
        for name, value in {**env, **override}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert cli.main(["init"]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("idp: ") and expected in lines[0], lines
