"""Test attestation roots and a test FIDO Metadata Service (MDS3) made here.

``AttestationCA`` is a test authenticator vendor: a root and a ``packed`` batch
certificate meeting WebAuthn L3 §8.2.1 (with the id-fido-gen-ce-aaguid extension).
``TestMds`` signs MDS3 BLOBs (a JWS RS256 with an x5c chain, FIDO MDS3 §3.1.7) under a
test root, and issues that root's CRL, so the IdP can be pointed at them through
``IDP_FIDO_MDS``, ``IDP_FIDO_MDS_ROOT`` and ``IDP_FIDO_MDS_CRLS``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.authenticator import SoftAuthenticator

AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def _name(cn: str, ou: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Authenticator Vendor")]
    if ou:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(parts)


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: Any, signer: Any, *, ca: bool,
                 extensions: tuple[x509.ExtensionType, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass
class AttestationCA:
    """A vendor root and one batch attestation certificate for the model ``aaguid``."""

    aaguid: bytes
    root: x509.Certificate
    batch_key: ec.EllipticCurvePrivateKey
    batch: x509.Certificate

    @classmethod
    def create(cls, aaguid: bytes | None = None, *, certificate_aaguid: bytes | None = None) -> AttestationCA:
        """``certificate_aaguid`` puts a different AAGUID in the batch certificate (a mismatch)."""
        aaguid = aaguid or uuid.uuid4().bytes
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name(f"Test Attestation Root {aaguid_text(aaguid)[:8]}")  # distinct: stores look up by name
        root = _certificate(root_name, root_name, root_key.public_key(), root_key, ca=True)
        batch_key = ec.generate_private_key(ec.SECP256R1())
        in_certificate = certificate_aaguid or aaguid
        extension = x509.UnrecognizedExtension(AAGUID_OID, b"\x04\x10" + in_certificate)
        batch = _certificate(_name("Test Batch 1", "Authenticator Attestation"), root.subject,
                             batch_key.public_key(), root_key, ca=False, extensions=(extension,))
        return cls(aaguid, root, batch_key, batch)

    def authenticator(self, rp_id: str, origin: str) -> SoftAuthenticator:
        """A phone whose secure area attests its keys with this vendor's batch certificate."""
        return SoftAuthenticator(rp_id, origin, attestation="packed", aaguid=self.aaguid,
                                 attestation_key=self.batch_key, attestation_chain=(der(self.batch),))


def aaguid_text(aaguid: bytes) -> str:
    return str(uuid.UUID(bytes=aaguid))


def mds_entry(aaguid: bytes, *, status: str = "FIDO_CERTIFIED_L1", roots: tuple[x509.Certificate, ...] = (),
              key_protection: tuple[str, ...] = ("hardware", "secure_element")) -> dict[str, Any]:
    """One MetadataBLOBPayloadEntry (FIDO MDS3 §3.1.1) with a minimal metadata statement."""
    return {
        "aaguid": aaguid_text(aaguid),
        "statusReports": [{"status": status, "effectiveDate": "2026-11-01"}],
        "timeOfLastStatusChange": "2026-11-01",
        "metadataStatement": {
            "description": "Test phone secure area",
            "aaguid": aaguid_text(aaguid),
            "authenticatorVersion": 1,
            "schema": 3,
            "upv": [{"major": 1, "minor": 1}],
            "attestationTypes": ["basic_full"],
            "userVerificationDetails": [[{"userVerificationMethod": "fingerprint_internal"}]],
            "keyProtection": list(key_protection),
            "matcherProtection": ["on_chip"],
            "attachmentHint": ["internal"],
            "tcDisplay": [],
            "attestationRootCertificates": [base64.b64encode(der(c)).decode() for c in roots],
        },
    }


@dataclass
class TestMds:
    """A test MDS root, its BLOB signer and the root's CRL."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    signer_key: rsa.RSAPrivateKey
    signer: x509.Certificate

    __test__ = False  # not a pytest class

    @classmethod
    def create(cls) -> TestMds:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _certificate(_name("Test MDS Root"), _name("Test MDS Root"), root_key.public_key(), root_key,
                            ca=True)
        signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signer = _certificate(_name("Test MDS BLOB Signer"), root.subject, signer_key.public_key(), root_key,
                              ca=False)
        return cls(root_key, root, signer_key, signer)

    def blob(self, entries: list[dict[str, Any]], *, no: int = 1, next_update: str = "2099-01-01",
             signer_key: rsa.RSAPrivateKey | None = None) -> bytes:
        """A JWS RS256 BLOB; ``signer_key`` other than the certified one makes a bad signature."""
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der(self.signer)).decode()]}
        payload = {"legalHeader": "test only", "no": no, "nextUpdate": next_update, "entries": entries}
        message = b".".join(_b64url(json.dumps(part).encode()) for part in (header, payload))
        signature = (signer_key or self.signer_key).sign(message, padding.PKCS1v15(), hashes.SHA256())
        return message + b"." + _b64url(signature)

    def crl(self, *, revoke_signer: bool = False) -> bytes:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.root.subject)
                   .last_update(now - dt.timedelta(hours=1)).next_update(now + dt.timedelta(days=7)))
        if revoke_signer:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(self.signer.serial_number)
                .revocation_date(now - dt.timedelta(minutes=5)).build())
        return builder.sign(self.root_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def files(self, folder: Path, blob: bytes, *, crl: bytes | None = None) -> dict[str, str]:
        """Write the BLOB, root and CRL under ``folder``; the IdP environment naming them."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "blob.jwt").write_bytes(blob)
        (folder / "mds-root.pem").write_bytes(pem(self.root))
        crls = folder / "crls"
        crls.mkdir(exist_ok=True)
        (crls / "root.crl").write_bytes(crl if crl is not None else self.crl())
        return {"IDP_FIDO_MDS": str(folder / "blob.jwt"), "IDP_FIDO_MDS_ROOT": str(folder / "mds-root.pem"),
                "IDP_FIDO_MDS_CRLS": str(crls)}


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
