"""Attestation by default, FIDO metadata, key protection and the hardware ``acr`` (PROTOCOL §7.4).

One IdP trusts vendor A's root through ``IDP_ATTESTATION_ROOTS`` and reads a test FIDO
MDS3 BLOB (signed by a test root given as ``IDP_FIDO_MDS_ROOT``) that vouches for vendor
B's model, marks model C REVOKED and model D software-only. Its operator policy makes
``financial`` require the hardware level even in development.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der.encoder import encode as der_encode
from webauthn.helpers.asn1.android_key import AuthorizationList, KeyDescription
from webauthn.helpers.structs import AttestationObject, AttestationStatement

from idp.attestation.mds import MetadataError, MetadataService
from idp.attestation.protection import (
    ANDROID_KEY_DESCRIPTION,
    ID_FIDO_GEN_CE_AAGUID,
    AttestationRefused,
    check_attestation_certificate,
    key_protection,
)
from idp.ca.profile import POLICY_DEVICE_HARDWARE, POLICY_DEVICE_SOFTWARE
from idp.policy import ACR_DEVICE_HARDWARE, ACR_DEVICE_UV, ACR_ORDER, PolicyError, load_policy
from idp.proofing.demo_card import TestJpkiCA
from tests.conftest import RunningIdP, start_idp
from tests.support import core
from tests.support.attestation import AttestationCA, TestMds, der, mds_entry, pem
from tests.support.rp import BrowserFlowError, RelyingParty
from tests.support.wallet import Enrolled, WalletError

VENDOR_A = AttestationCA.create()  # trusted through IDP_ATTESTATION_ROOTS
VENDOR_B = AttestationCA.create()  # trusted through FIDO metadata for its AAGUID
VENDOR_C = AttestationCA.create()  # REVOKED in FIDO metadata
VENDOR_D = AttestationCA.create()  # metadata says: software key protection
POLICY = '[categories.financial]\nacr = "urn:x-jp-digital-id:acr:device-certificate-hardware"\n'


@pytest.fixture(scope="module")
def mds() -> TestMds:
    return TestMds.create()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA, mds: TestMds) -> Iterator[RunningIdP]:
    tmp = tmp_path_factory.mktemp("attestation")
    (tmp / "roots.pem").write_bytes(pem(VENDOR_A.root))
    (tmp / "policy.toml").write_text(POLICY)
    blob = mds.blob([
        mds_entry(VENDOR_B.aaguid, roots=(VENDOR_B.root,)),
        mds_entry(VENDOR_C.aaguid, roots=(VENDOR_C.root,), status="REVOKED"),
        mds_entry(VENDOR_D.aaguid, roots=(VENDOR_D.root,), key_protection=("software",)),
    ])
    env = {"IDP_ATTESTATION_ROOTS": str(tmp / "roots.pem"), "IDP_POLICY_FILE": str(tmp / "policy.toml"),
           **mds.files(tmp / "mds", blob)}
    with contextlib.contextmanager(start_idp)(tmp, jpki_ca, env=env) as running:
        yield running


def enrol(server: RunningIdP, vendor: AttestationCA | None = None, kind: str = "none") -> Enrolled:
    wallet = server.wallet()
    authenticator = (vendor.authenticator(server.settings.rp_id, server.settings.issuer_origin) if vendor
                     else wallet.new_authenticator(attestation=kind))
    return wallet.enroll(core.card(server), authenticator=authenticator)


def policy_oid(device: Enrolled) -> x509.ObjectIdentifier:
    policies = device.certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    return policies[0].policy_identifier


def financial_rp(server: RunningIdP) -> RelyingParty:
    return RelyingParty.register(server.base_url, redirect_uri=core.redirect_uri(path="/fin/cb"),
                                 rp_category="financial", token_endpoint_auth_method="private_key_jwt",
                                 scope="openid profile")


@pytest.mark.parametrize("vendor", [VENDOR_A, VENDOR_B], ids=["operator-root", "fido-metadata-root"])
def test_packed_chain_to_trusted_root_is_hardware_and_reaches_the_hardware_acr(server, browser, vendor) -> None:
    device = enrol(server, vendor)
    assert device.finish_response["key_protection"] == "hardware"
    assert policy_oid(device) == POLICY_DEVICE_HARDWARE
    result = core.login(server, browser, core.register(server, "municipal"), device)
    assert result.claims["acr"] == ACR_DEVICE_HARDWARE
    rp = financial_rp(server)
    result = rp.finish(core.callback(server, requests.Session(), rp, device))
    assert result.claims["acr"] == ACR_DEVICE_HARDWARE


@pytest.mark.parametrize("kind", ["none", "packed-self"])
def test_self_attestation_and_none_are_unverified_and_reach_the_user_verified_acr(server, browser, kind) -> None:
    device = enrol(server, kind=kind)
    assert device.finish_response["key_protection"] == "unverified"
    assert policy_oid(device) == POLICY_DEVICE_SOFTWARE
    result = core.login(server, browser, core.register(server, "municipal"), device)
    assert result.claims["acr"] == ACR_DEVICE_UV


def test_financial_rp_requiring_hardware_refuses_an_unverified_device_with_a_page(server, browser) -> None:
    device = enrol(server)
    rp = financial_rp(server)
    with pytest.raises(BrowserFlowError) as refused:
        core.callback(server, browser, rp, device)
    page = refused.value.response
    assert page is not None and page.status_code == 403 and page.headers["Content-Type"].startswith("text/html")
    assert 'data-error="hardware_key_required"' in page.text
    back = page.text.split('class="button primary" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert back.startswith(rp.redirect_uri)
    query = parse_qs(urlsplit(back).query)
    assert query["error"] == ["access_denied"] and query["iss"] == [server.base_url]


def test_metadata_software_key_protection_is_unverified(server) -> None:
    device = enrol(server, VENDOR_D)
    assert device.finish_response["key_protection"] == "unverified"


def test_revoked_model_in_fido_metadata_cannot_enrol(server) -> None:
    with pytest.raises(WalletError) as refused:
        enrol(server, VENDOR_C)
    body = core.error_of(refused.value, error="authenticator_refused")
    assert "REVOKED" in body["error_description"]


def test_certificate_aaguid_differing_from_the_authenticator_is_refused(server) -> None:
    """WebAuthn L3 §8.2.1: the id-fido-gen-ce-aaguid extension must match the AAGUID."""
    liar = AttestationCA.create(certificate_aaguid=uuid.uuid4().bytes)
    liar.root = VENDOR_A.root  # irrelevant: the statement is refused before its chain is judged
    with pytest.raises(WalletError) as refused:
        enrol(server, liar)
    core.error_of(refused.value, error="attestation_failed")


def test_discovery_lists_acr_values_ascending_with_hardware_last(server) -> None:
    config = requests.get(server.base_url + "/.well-known/openid-configuration", timeout=10).json()
    assert config["acr_values_supported"] == list(ACR_ORDER)
    assert config["acr_values_supported"][-1] == ACR_DEVICE_HARDWARE


# policy ---------------------------------------------------------------------------------
def test_financial_requires_hardware_outside_development_only(tmp_path: Path) -> None:
    assert load_policy(development=False)["financial"].acr == ACR_DEVICE_HARDWARE
    assert load_policy(development=True)["financial"].acr == ACR_DEVICE_UV
    lowered = tmp_path / "policy.toml"
    lowered.write_text('[categories.financial]\nacr = "urn:x-jp-digital-id:acr:device-certificate-uv"\n')
    with pytest.raises(PolicyError, match="categories.financial.acr"):
        load_policy(lowered, development=False)
    medical = tmp_path / "medical.toml"
    medical.write_text(f'[categories.medical]\nacr = "{ACR_DEVICE_HARDWARE}"\n')
    assert load_policy(medical, development=True)["medical"].acr == ACR_DEVICE_HARDWARE


# the BLOB -------------------------------------------------------------------------------------
def _load(mds: TestMds, tmp: Path, blob: bytes, **kwargs: Any) -> MetadataService:
    env = mds.files(tmp, blob, **kwargs)
    return MetadataService.load(Path(env["IDP_FIDO_MDS"]), root=Path(env["IDP_FIDO_MDS_ROOT"]),
                                crls=Path(env["IDP_FIDO_MDS_CRLS"]))


def test_blob_checks_crl_validity_and_freshness(mds: TestMds, tmp_path: Path) -> None:
    assert _load(mds, tmp_path, mds.blob([])).serial == 1
    with pytest.raises(MetadataError, match="revoked"):
        _load(mds, tmp_path, mds.blob([]), crl=mds.crl(revoke_signer=True))
    with pytest.raises(MetadataError, match="stale"):
        _load(mds, tmp_path, mds.blob([], next_update="2020-01-01"))
    other = TestMds.create()
    with pytest.raises(MetadataError, match="no CRL signed by"):
        _load(mds, tmp_path, mds.blob([]), crl=other.crl())
    with pytest.raises(MetadataError, match="not a JWS"):
        _load(mds, tmp_path, b"garbage")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)
    env = mds.files(tmp_path, mds.blob([]))
    with pytest.raises(MetadataError, match="outside its validity"):
        MetadataService.load(Path(env["IDP_FIDO_MDS"]), root=Path(env["IDP_FIDO_MDS_ROOT"]),
                             crls=Path(env["IDP_FIDO_MDS_CRLS"]), now=later)


def test_default_root_is_the_fido_alliance_root() -> None:
    from idp.attestation.mds import DEFAULT_ROOT

    root = x509.load_pem_x509_certificate(DEFAULT_ROOT.read_bytes())
    assert root.subject.rfc4514_string() == "CN=GlobalSign,O=GlobalSign,OU=GlobalSign Root CA - R3"


def test_blob_with_a_bad_signature_stops_the_server_at_start_with_one_line(mds: TestMds, tmp_path: Path,
                                                                          jpki_ca: TestJpkiCA) -> None:
    forged = mds.blob([], signer_key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    env = {**os.environ, **mds.files(tmp_path / "mds", forged), "IDP_ISSUER": "http://127.0.0.1:9",
           "IDP_KEYS_DIR": str(tmp_path / "keys"), "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
           "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}", "IDP_REGISTRATION_TOKEN": "t" * 32}
    done = subprocess.run([sys.executable, "-m", "idp.cli", "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "signature does not verify" in lines[0] and "IDP_FIDO_MDS" in lines[0]


# the certificate rules, unit by unit -----------------------------------------------------------
def _statement(fmt: str, leaf: x509.Certificate | None) -> AttestationObject:
    x5c = [der(leaf)] if leaf is not None else None
    return AttestationObject(fmt=fmt, att_stmt=AttestationStatement(sig=b"s", alg=-7, x5c=x5c),
                             auth_data=None)  # type: ignore[arg-type]


def _leaf(*, ou: str = "Authenticator Attestation", ca: bool = False,
          extension: x509.ExtensionType | None = None, critical: bool = False) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vendor"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Batch")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if extension is not None:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


AAGUID = uuid.uuid4().bytes


@pytest.mark.parametrize("leaf, why", [
    (dict(ou="Something Else"), "OU"),
    (dict(ca=True), "CA certificate"),
    (dict(extension=x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, b"\x04\x10" + AAGUID), critical=True),
     "critical"),
    (dict(extension=x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, b"\x04\x10" + bytes(16))), "differs"),
    (dict(extension=x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, b"\x0c\x02ab")), "OCTET STRING"),
], ids=["ou", "ca", "critical-aaguid", "other-aaguid", "not-octet-string"])
def test_packed_certificate_rules_refuse(leaf: dict[str, Any], why: str) -> None:
    with pytest.raises(AttestationRefused, match=why):
        check_attestation_certificate(_statement("packed", _leaf(**leaf)), AAGUID)


def test_packed_certificate_meeting_the_rules_passes() -> None:
    extension = x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, b"\x04\x10" + AAGUID)
    check_attestation_certificate(_statement("packed", _leaf(extension=extension)), AAGUID)


def _android_leaf(attestation_level: int, keymaster_level: int) -> x509.Certificate:
    description = KeyDescription()
    description["attestationVersion"] = 3
    description["attestationSecurityLevel"] = attestation_level
    description["keymasterVersion"] = 4
    description["keymasterSecurityLevel"] = keymaster_level
    description["attestationChallenge"] = b"c" * 32
    description["uniqueId"] = b""
    description["softwareEnforced"] = AuthorizationList()
    description["teeEnforced"] = AuthorizationList()
    return _leaf(extension=x509.UnrecognizedExtension(ANDROID_KEY_DESCRIPTION, der_encode(description)))


@pytest.mark.parametrize("levels, expected", [
    ((1, 1), "hardware"), ((2, 2), "hardware"), ((1, 2), "hardware"), ((0, 1), "unverified"), ((1, 0), "unverified"),
], ids=["tee", "strongbox", "mixed-hardware", "software-attestation", "software-key"])
def test_android_key_is_hardware_only_in_a_tee_or_strongbox(levels: tuple[int, int], expected: str) -> None:
    statement = _statement("android-key", _android_leaf(*levels))
    assert key_protection(statement, chained=True, metadata_key_protection=None) == expected


def test_key_protection_needs_a_trusted_chain_and_no_software_metadata() -> None:
    packed = _statement("packed", _leaf())
    assert key_protection(packed, chained=True, metadata_key_protection=None) == "hardware"
    assert key_protection(packed, chained=False, metadata_key_protection=None) == "unverified"
    assert key_protection(packed, chained=True, metadata_key_protection=["software"]) == "unverified"
    assert key_protection(_statement("packed", None), chained=True, metadata_key_protection=None) == "unverified"
    assert key_protection(_statement("apple", _leaf()), chained=True, metadata_key_protection=None) == "hardware"
    assert key_protection(_statement("fido-u2f", _leaf()), chained=True, metadata_key_protection=None) == "unverified"
