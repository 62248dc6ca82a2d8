"""The trust service's certification authority: one key pair and its self-signed certificate.

The CA key is ECDSA P-256 and every signature it makes is ecdsa-with-SHA256 (RFC 5758
§3.2). Why not P-384: the device keys it certifies are P-256 (WebAuthn ES256), so the
chain is never stronger than ~128-bit security whatever the CA uses; P-256 signs and
verifies several times faster, which matters because the CA signs every OCSP response
live; and P-256 with SHA-256 is the pairing every platform verifier supports (Android,
iOS, browsers, the CA/Browser Forum baseline).

The key and certificate are parsed once and kept in memory, and the certificate's DER
and OCSP CertID hashes are cached, because issuance and OCSP sit on hot paths.

Times: every public function accepts timezone-aware datetimes; a naive datetime is taken
as UTC (the convention `cryptography` itself follows), and fractional seconds are dropped
because RFC 5280 §4.1.2.5 forbids them in certificate and CRL times.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.files import write_atomically

KEY_FILE = "ca.key.pem"
CERT_FILE = "ca.cert.pem"
COUNTRY = "JP"
CURVE = ec.SECP256R1()
SIGNATURE_HASH = hashes.SHA256()
"""The digest of every CA signature: ecdsa-with-SHA256, the match for P-256."""

_UB_NAME = 64  # ub-common-name and ub-organization-name, RFC 5280 Appendix A.1


def as_utc(moment: dt.datetime) -> dt.datetime:
    """Return `moment` in UTC without fractional seconds (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0)


def _check_name_part(label: str, value: str) -> None:
    """Refuse an attribute value RFC 5280's upper bounds (Appendix A.1) would reject."""
    if not 1 <= len(value) <= _UB_NAME:
        raise ValueError(f"{label} must be 1 to {_UB_NAME} characters, got {len(value)}")


def _ca_name(common_name: str, organization: str) -> x509.Name:
    """Subject (and issuer) name of the CA: C=JP, O=<organization>, CN=<common name>."""
    _check_name_part("organization", organization)
    _check_name_part("common name", common_name)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    """The CA private key and its self-signed certificate, parsed and ready to sign."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate):
        """Pair a key with its certificate; refuses a key the certificate does not certify."""
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key must be an ECDSA private key")
        if private_key.public_key() != certificate.public_key():
            raise ValueError("the CA private key does not match the CA certificate")
        self.private_key = private_key
        self.certificate = certificate
        self.subject_key_identifier: x509.SubjectKeyIdentifier = (
            certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
        organizations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not organizations:
            raise ValueError("the CA certificate's subject has no organizationName")
        self.organization = str(organizations[0].value)
        """The CA's organizationName, which device certificate subjects repeat."""
        self._certificate_der = certificate.public_bytes(serialization.Encoding.DER)
        self._cert_id_hashes: dict[str, tuple[bytes, bytes]] = {}

    @classmethod
    def create(
        cls,
        common_name: str,
        organization: str,
        *,
        validity_days: int = 3650,
        now: dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> CertificateAuthority:
        """A self-signed RFC 5280 CA certificate for ``key`` (a new in-memory P-256 key if None;
        the deployment passes one its key backend made, in a file or an HSM token).

        basicConstraints is critical CA:TRUE with pathLenConstraint 0 because this CA
        issues only end-entity certificates (§4.2.1.9). keyUsage (critical, §4.2.1.3)
        is keyCertSign + cRLSign for certificates and CRLs, plus digitalSignature
        because the CA signs OCSP responses itself (RFC 6960 §4.2.2.2). The
        authorityKeyIdentifier is omitted, as §4.2.1.1 allows for self-signed CA
        certificates.
        """
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        not_before = as_utc(now if now is not None else dt.datetime.now(dt.timezone.utc))
        key = key or ec.generate_private_key(CURVE)
        name = _ca_name(common_name, organization)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, SIGNATURE_HASH)
        )
        return cls(key, certificate)

    def save(self, folder: Path) -> None:
        """Write ``ca.cert.pem`` (mode 0644) into ``folder``; the key is its backend's business."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / CERT_FILE, self.certificate.public_bytes(serialization.Encoding.PEM), 0o644)

    @classmethod
    def load(cls, folder: Path, private_key: ec.EllipticCurvePrivateKey) -> CertificateAuthority:
        """The certificate ``save`` wrote, paired with its key; ValueError if they do not match."""
        certificate = x509.load_pem_x509_certificate((Path(folder) / CERT_FILE).read_bytes())
        return cls(private_key, certificate)

    @property
    def certificate_der(self) -> bytes:
        """The CA certificate in DER (served at `/ca/certificate` and in `ca_chain`)."""
        return self._certificate_der

    def cert_id_hashes(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        """(issuerNameHash, issuerKeyHash) of a CertID naming this CA (RFC 6960 §4.1.1).

        The name hash covers the DER of the CA's subject name; the key hash covers the
        subjectPublicKey BIT STRING's value, which for an EC key is the encoded point.
        """
        cached = self._cert_id_hashes.get(algorithm.name)
        if cached is None:
            point = self.certificate.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            cached = (_digest(algorithm, self.certificate.subject.public_bytes()), _digest(algorithm, point))
            self._cert_id_hashes[algorithm.name] = cached
        return cached


def key_usage(*granted: str) -> x509.KeyUsage:
    """RFC 5280 §4.2.1.3 key usage with exactly the ``granted`` bits set (cryptography's names)."""
    bits = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
            "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    unknown = set(granted) - set(bits)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}")
    return x509.KeyUsage(**{bit: bit in granted for bit in bits})


def _ca_key_usage() -> x509.KeyUsage:
    """keyCertSign + cRLSign + digitalSignature (the last for signing OCSP responses)."""
    return key_usage("digital_signature", "key_cert_sign", "crl_sign")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    """Hash `data` with `algorithm`."""
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()
