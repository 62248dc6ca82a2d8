"""The whole core path (tests/test_core_e2e.py) again, with the CA key and the ID-token
signing keys in a SoftHSM2 token (PROTOCOL §7.5): every test of that module runs here
against an IdP whose keys were generated and are used in the token."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from idp.proofing.demo_card import TestJpkiCA
from idp.signing.pkcs11 import Pkcs11KeyBackend
from tests.conftest import RunningIdP, start_idp
from tests.support.softhsm import shared_softhsm
from tests.test_core_e2e import *  # noqa: F401,F403  (the core path's tests and fixtures, re-collected here)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:  # noqa: F811
    env = shared_softhsm(tmp_path_factory).token("core-e2e")
    with contextlib.contextmanager(start_idp)(tmp_path_factory.mktemp("e2e-hsm"), jpki_ca, env=env) as running:
        assert isinstance(running.services().keystore.backend, Pkcs11KeyBackend)
        yield running


def test_an_unanswering_token_is_a_503_not_a_500(server: RunningIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HSM that stops answering is an outage: 503 with Retry-After, like a database one."""
    from idp.signing import KeyBackendError
    from idp.signing.pkcs11 import Token

    def fail(*args: object, **kwargs: object) -> bytes:
        raise KeyBackendError("PKCS#11 signature failed: DeviceRemoved")

    issuer = requests.get(server.base_url + "/ca/certificate", timeout=10).content
    monkeypatch.setattr(Token, "sign", fail)
    ca = x509.load_der_x509_certificate(issuer)
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        hashlib.sha1(ca.subject.public_bytes()).digest(),
        hashlib.sha1(ca.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)).digest(),
        1, hashes.SHA1()).build()
    answer = requests.post(server.base_url + "/ca/ocsp", data=request.public_bytes(Encoding.DER),
                           headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json()["error"] == "temporarily_unavailable"
