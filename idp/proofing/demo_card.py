"""TEST-ONLY JPKI CA and My Number Card issuer.

NEVER TRUST THIS CA IN PRODUCTION. It exists for the test suite and for the
development-mode demo (``idp init`` in development saves one under
``keys/jpki-test/``). Its certificates mimic the J-LIS signing certificate
profile of PROTOCOL.md section 3 so that ``idp.proofing.jpki`` is exercised
exactly as real cards exercise it: RSA-2048 keys, sha256WithRSAEncryption,
the J-LIS CA name, key usage (critical) digitalSignature + nonRepudiation,
the *test card* policy OID ``1.2.392.200149.8.5.1.0.20`` and the six
subjectAltName otherName attributes, each ``[0] EXPLICIT UTF8String``
(RFC 5280 section 4.2.1.6). The CA name is the real J-LIS name on purpose:
a test card is told apart by its key (it does not chain to the real root)
and by its policy OID, never by its name.
"""

from __future__ import annotations

import datetime
import functools
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from idp.ca.authority import key_usage as build_key_usage
from idp.proofing import jpki

CA_NAME_PARTS = (
    (NameOID.COUNTRY_NAME, "JP"),
    (NameOID.ORGANIZATION_NAME, "JPKI"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "JPKI for digital signature"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Japan Agency for Local Authority Information Systems"),
)
CERTIFICATE_FILE = "ca.pem"
PRIVATE_KEY_FILE = "ca.key.pem"
CARD_KEY_USAGE = ("digital_signature", "content_commitment")  # content_commitment = nonRepudiation


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 key, the size J-LIS uses for cards and for its CA."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def cached_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA-2048 key per label per process: tests reuse keys because generation is slow."""
    return new_rsa_key()


def _utcnow(now: datetime.datetime | None) -> datetime.datetime:
    return now or datetime.datetime.now(datetime.UTC)


def _ca_name(name_suffix: str) -> x509.Name:
    parts = list(CA_NAME_PARTS)
    oid, last = parts[-1]
    parts[-1] = (oid, last + name_suffix)
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _other_name(oid: str, value: str) -> x509.OtherName:
    # cryptography's OtherName.value is what sits inside the otherName's own
    # "[0] EXPLICIT" wrapper (RFC 5280 section 4.2.1.6), here a DER UTF8String.
    return x509.OtherName(x509.ObjectIdentifier(oid), asn1.encode_der(value))


@dataclass
class TestCard:
    """A test My Number Card: its JPKI signing certificate and private key."""

    __test__ = False  # not a pytest test class

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def serial_number(self) -> int:
        return self.certificate.serial_number

    def sign(self, message: bytes) -> bytes:
        """Sign as the card does: RSA PKCS#1 v1.5 with SHA-256."""
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def sign_binding(self, challenge: bytes, credential_spki_der: bytes) -> bytes:
        """Sign the enrolment binding string of PROTOCOL.md section 3, step 2."""
        return self.sign(jpki.binding_message(challenge, credential_spki_der))


@dataclass
class TestJpkiCA:
    """A TEST JPKI signing CA (self-signed, or subordinate to another test CA)."""

    __test__ = False  # not a pytest test class

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @classmethod
    def create(
        cls,
        *,
        name_suffix: str = "",
        now: datetime.datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
        parent: TestJpkiCA | None = None,
    ) -> TestJpkiCA:
        """Make a CA named like J-LIS's (plus ``name_suffix`` on the last OU).

        With ``parent`` the CA is an intermediate issued by that CA, for chain tests.
        """
        now = _utcnow(now)
        key = key or new_rsa_key()
        subject = _ca_name(name_suffix)
        issuer_name, issuer_key = (parent.certificate.subject, parent.private_key) if parent else (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * 20))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(build_key_usage("key_cert_sign", "crl_sign"), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.private_key.public_key()),
                critical=False,
            )
        return cls(builder.sign(issuer_key, hashes.SHA256()), key)

    def issue_card(
        self,
        *,
        name: str = "前橋　太郎",
        name_substitution: str | None = None,
        gender: str = "1",
        date_of_birth: str = "419800101",
        address: str = "群馬県前橋市大手町二丁目１２番１号",
        address_substitution: str | None = None,
        prefecture: str = "群馬県",
        municipality: str = "前橋市",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
        key_usage: Sequence[str] | None = CARD_KEY_USAGE,
        key_usage_critical: bool = True,
        policy_oid: str | None = jpki.TEST_POLICY_OID,
        omit_attributes: Iterable[str] = (),
        extra_attributes: Sequence[tuple[str, str]] = (),
    ) -> TestCard:
        """Issue a test card certificate; the knobs make deliberately bad cards.

        ``omit_attributes`` names ``JpkiAttributes`` fields to leave out of the
        SAN; ``extra_attributes`` adds (field, value) entries, e.g. duplicates;
        ``key_usage=None`` / ``policy_oid=None`` drop those extensions.
        """
        now = datetime.datetime.now(datetime.UTC)
        key = key or new_rsa_key()
        values = {
            "name": name,
            "name_substitution": "0" * len(name) if name_substitution is None else name_substitution,
            "gender": gender,
            "date_of_birth": date_of_birth,
            "address": address,
            "address_substitution": "0" * len(address) if address_substitution is None else address_substitution,
        }
        omitted = set(omit_attributes)
        entries = [(field, value) for field, value in values.items() if field not in omitted]
        san = [_other_name(jpki.ATTRIBUTE_OIDS[field], value) for field, value in [*entries, *extra_attributes]]
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, prefecture),
            x509.NameAttribute(NameOID.LOCALITY_NAME, municipality),
            x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(12).upper()),
        ])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or now + datetime.timedelta(days=365 * 5))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()), critical=False
            )
        )
        if key_usage is not None:
            builder = builder.add_extension(build_key_usage(*key_usage), critical=key_usage_critical)
        if policy_oid is not None:
            policy = x509.PolicyInformation(x509.ObjectIdentifier(policy_oid), None)
            builder = builder.add_extension(x509.CertificatePolicies([policy]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return TestCard(builder.sign(self.private_key, hashes.SHA256()), key)

    def crl(
        self,
        revoked: Sequence[tuple[int, x509.ReasonFlags | None]] = (),
        *,
        now: datetime.datetime | None = None,
        next_update: datetime.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL (RFC 5280 section 5) listing (serial, reason) pairs; reason None omits CRLReason."""
        now = _utcnow(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(next_update or now + datetime.timedelta(days=1))
            .add_extension(x509.CRLNumber(secrets.randbits(63)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()), critical=False
            )
        )
        for serial, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.private_key, hashes.SHA256())

    def save(self, folder: Path) -> None:
        """Write ca.pem and ca.key.pem (mode 0600) into ``folder`` (created 0700)."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / CERTIFICATE_FILE).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(folder / PRIVATE_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(key_pem)

    @classmethod
    def load(cls, folder: Path) -> TestJpkiCA:
        """Read a CA written by :meth:`save`."""
        certificate = x509.load_pem_x509_certificate((folder / CERTIFICATE_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / PRIVATE_KEY_FILE).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{folder / PRIVATE_KEY_FILE} is not an RSA private key")
        return cls(certificate, key)
