"""My Number Card JPKI signing certificate (署名用電子証明書) verification.

PROTOCOL.md section 3: at enrolment the wallet sends the card's JPKI signing
certificate, optional intermediates and a card signature binding the server
challenge to the new device key. This module decides whether the certificate
is a genuine, current J-LIS signing certificate and returns the basic four
attributes it carries; it performs no I/O beyond loading the trust material.

Checks run in a fixed order, each raising :class:`JpkiError` with a short
``code``: parse, algorithm, validity, path to a trust anchor, revocation, key
usage, certificate policy, attributes. Errors and logs never contain the
person's attributes, the certificate subject or its serial number.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

logger = logging.getLogger(__name__)

PRODUCTION_POLICY_OID = "1.2.392.200149.8.5.1.1.20"
TEST_POLICY_OID = "1.2.392.200149.8.5.1.0.20"
ACCEPTED_POLICY_OIDS = frozenset({PRODUCTION_POLICY_OID, TEST_POLICY_OID})
ATTRIBUTE_OIDS: Mapping[str, str] = MappingProxyType({
    "name": "1.2.392.200149.8.5.5.1",
    "name_substitution": "1.2.392.200149.8.5.5.2",
    "gender": "1.2.392.200149.8.5.5.3",
    "date_of_birth": "1.2.392.200149.8.5.5.4",
    "address": "1.2.392.200149.8.5.5.5",
    "address_substitution": "1.2.392.200149.8.5.5.6",
})
MIN_RSA_BITS = 2048
MAX_ADDRESS_LENGTH = 200
GENDERS = frozenset({"1", "2", "3"})
BINDING_PREFIX = b"jpki-enroll-v1:"
CRL_RECHECK_SECONDS = 60.0

_DATE_OF_BIRTH = re.compile(r"[0-5][0-9]{8}")  # ASCII only: \d would accept any Unicode digit
_SUBSTITUTION = re.compile(r"[0-9]*")
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


class JpkiError(Exception):
    """A JPKI certificate or signature was refused.

    ``code`` is a short machine reason (``untrusted_issuer``, ``expired``,
    ``not_yet_valid``, ``revoked``, ``bad_algorithm``, ``bad_key_usage``,
    ``bad_policy``, ``missing_attribute``, ``bad_attribute``,
    ``bad_signature``, ``malformed``, ``untrusted_crl``); ``description`` is
    English text safe to show and log: it never carries personal data.
    """

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


@dataclass(frozen=True, repr=False)  # no repr: every field is personal data
class JpkiAttributes:
    """The basic four attributes (基本4情報) from the certificate's subjectAltName."""

    name: str
    name_substitution: str
    gender: str
    date_of_birth: str
    address: str
    address_substitution: str

    @property
    def birthdate(self) -> datetime.date | None:
        """The Gregorian date of birth; None when the era digit is 0 (unknown) or the date is invalid."""
        if self.date_of_birth[:1] in ("", "0"):
            return None
        try:
            dob = self.date_of_birth
            return datetime.date(int(dob[1:5]), int(dob[5:7]), int(dob[7:9]))
        except ValueError:
            return None

    @property
    def gender_claim(self) -> str | None:
        """The OpenID Connect ``gender`` claim; None for 3 (unknown)."""
        return {"1": "male", "2": "female"}.get(self.gender)


@dataclass(frozen=True)
class VerifiedJpki:
    """A JPKI signing certificate that passed every check, with its attributes."""

    certificate: x509.Certificate = field(repr=False)
    serial_number: int = field(repr=False)
    issuer_der: bytes = field(repr=False)
    not_before: datetime.datetime
    not_after: datetime.datetime
    attributes: JpkiAttributes = field(repr=False)
    policy_oid: str


class RevokedEntry(NamedTuple):
    """One CRL entry: issuer name (DER), serial, RFC 5280 section 5.3.1 reason name or None."""

    issuer_der: bytes
    serial_number: int
    reason: str | None


@dataclass(frozen=True)
class _Revocations:
    """Revoked serials per issuer name, and the newest nextUpdate per issuer."""

    revoked: Mapping[bytes, Mapping[int, str | None]]
    next_update: Mapping[bytes, datetime.datetime]


def _ca_key_usage(policy: Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    # RFC 5280 section 4.2.1.3: a CA key that signs certificates must assert keyCertSign.
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("CA key usage lacks keyCertSign")


# The J-LIS profile is not the Web PKI, so the extension rules are our own.
# cryptography still enforces basicConstraints cA on every CA (RFC 5280
# section 4.2.1.9), signatures, validity and RFC 5280 section 4.2's rule that
# an unknown critical extension is refused. certificatePolicies is declared
# because we do process it (``_policy_oid``) and J-LIS may mark it critical.
_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    .may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None)
)
_EE_POLICY = ExtensionPolicy.permit_all().may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None)


class JpkiTrustStore:
    """Trust anchors and CRLs for JPKI certificates, parsed once.

    Every certificate given as an anchor (J-LIS roots, link certificates or
    intermediates) is trusted a priori. With no anchor every certificate is
    refused. Every CRL must be signed by an anchor bearing its issuer name.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate] = (),
        crls: Iterable[tuple[str, x509.CertificateRevocationList]] = (),
        *,
        accept_test_cards: bool = False,
    ) -> None:
        """``crls`` pairs each CRL with a label (its file) for error messages.

        ``accept_test_cards`` admits the test card policy OID; only a development issuer
        passes True (PROTOCOL §7.6: nothing made for development is trusted with https).
        """
        self._anchors = tuple(anchors)
        self.accept_test_cards = accept_test_cards
        self._store = Store(list(self._anchors)) if self._anchors else None
        self._revocations = self._index_crls(crls)
        self._crl_checked = time.monotonic()
        self._crl_fingerprint: tuple[tuple[str, int, int], ...] | None = None
        if self._store is None:
            logger.warning("no JPKI trust anchors configured: every JPKI certificate will be refused")

    @classmethod
    def from_paths(cls, anchors: Path | None, crls: Path | None, *, extra_anchors: Sequence[Path] = (),
                   accept_test_cards: bool = False) -> JpkiTrustStore:
        """Load PEM/DER certificates and CRLs from a file or a folder of files.

        A missing anchors location yields a store that refuses everything; a
        given CRL location must exist, and a corrupt or unverifiable CRL
        raises at load, naming its file. ``extra_anchors`` are files trusted as well
        (the development TEST root, kept apart from the operator's anchors).
        """
        certificates = [c for path in [*_files(anchors), *extra_anchors] for c in _read_certificates(path)]
        store = cls(certificates, _read_crl_files(crls), accept_test_cards=accept_test_cards)
        store._crl_fingerprint = _fingerprint(crls)
        logger.info("loaded %d JPKI trust anchors", len(certificates))
        return store

    def reload_crls(self, crls: Path) -> list[RevokedEntry]:
        """Replace every CRL by those under ``crls`` and return all revoked entries.

        On any error the previous CRLs stay in force. Callers apply the
        returned entries to stored data (e.g. accounts enrolled with them).
        """
        self._revocations = self._index_crls(_read_crl_files(crls))
        return self.revoked_serials()

    def refresh_crls_if_changed(self, crls: Path | None) -> None:
        """Pick up CRL files an operator replaced, at most once per CRL_RECHECK_SECONDS.

        Every worker re-reads changed files itself, so a card revoked by J-LIS is refused
        everywhere within a minute, without a restart. A broken new file keeps the
        previous CRLs in force (logged), never opening the gate.
        """
        now = time.monotonic()
        if crls is None or now - self._crl_checked < CRL_RECHECK_SECONDS:
            return
        self._crl_checked = now
        fingerprint = _fingerprint(crls)
        if fingerprint == self._crl_fingerprint:
            return
        try:
            self.reload_crls(crls)
        except JpkiError as exc:
            logger.warning("JPKI CRLs not reloaded: %s", exc.description)
            return
        self._crl_fingerprint = fingerprint

    def revoked_serials(self) -> list[RevokedEntry]:
        """Every entry of the loaded CRLs."""
        return [
            RevokedEntry(issuer, serial, reason)
            for issuer, entries in self._revocations.revoked.items()
            for serial, reason in entries.items()
        ]

    def verify(
        self,
        certificate_der: bytes,
        chain_der: Sequence[bytes] = (),
        *,
        at: datetime.datetime | None = None,
    ) -> VerifiedJpki:
        """Verify a JPKI signing certificate (DER) at ``at`` (aware; default now).

        ``chain_der`` are untrusted intermediates that may help build the path.
        """
        at = _aware_or_now(at)
        certificate = _parse_certificate(certificate_der)
        intermediates = [_parse_certificate(der) for der in chain_der]
        _check_algorithm(certificate)
        _check_validity(certificate, at)
        self._check_path(certificate, intermediates, at)
        self._check_revocation(certificate, at)
        _check_key_usage(certificate)
        return VerifiedJpki(
            certificate=certificate,
            serial_number=certificate.serial_number,
            issuer_der=certificate.issuer.public_bytes(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            policy_oid=self._check_policy(certificate),
            attributes=_read_attributes(certificate),
        )

    def trusts(self, certificate: x509.Certificate) -> bool:
        """True when ``certificate`` is one of this store's anchors."""
        return any(anchor == certificate for anchor in self._anchors)

    def _check_policy(self, certificate: x509.Certificate) -> str:
        """The card's policy OID; the test card OID only when this store accepts test cards."""
        policy = _policy_oid(certificate)
        if policy == TEST_POLICY_OID and not self.accept_test_cards:
            raise JpkiError("bad_policy", "a test card certificate is accepted only by a development deployment")
        return policy

    def _check_path(
        self, certificate: x509.Certificate, intermediates: list[x509.Certificate], at: datetime.datetime
    ) -> None:
        """RFC 5280 section 6.1 path validation to a trust anchor, via cryptography's verifier.

        The verifier's message names the subject (personal data), so it is dropped.
        """
        if self._store is None:
            raise JpkiError("untrusted_issuer", "no JPKI trust anchors are configured, so every certificate is refused")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            verifier.verify(certificate, intermediates)
        except VerificationError:
            raise JpkiError(
                "untrusted_issuer",
                "the certificate does not chain to a trusted JPKI CA through valid CA certificates",
            ) from None

    def _check_revocation(self, certificate: x509.Certificate, at: datetime.datetime) -> None:
        """RFC 5280 section 6.3: refuse a serial listed by a CRL of the certificate's issuer.

        A CRL past its nextUpdate (section 5.1.2.5) still proves revocation, so
        it is applied, and the staleness is logged for the operator.
        """
        revocations, issuer = self._revocations, certificate.issuer.public_bytes()
        if certificate.serial_number in revocations.revoked.get(issuer, {}):
            raise JpkiError("revoked", "the JPKI certificate has been revoked by its issuer")
        next_update = revocations.next_update.get(issuer)
        if next_update is not None and at > next_update:
            logger.warning("a JPKI CRL is past its nextUpdate (%s); refresh the CRLs", next_update.isoformat())

    def _index_crls(self, crls: Iterable[tuple[str, x509.CertificateRevocationList]]) -> _Revocations:
        revoked: dict[bytes, dict[int, str | None]] = {}
        next_update: dict[bytes, datetime.datetime] = {}
        for label, crl in crls:
            if not any(a.subject == crl.issuer and _signed_by(crl, a) for a in self._anchors):
                raise JpkiError("untrusted_crl", f"{label} is not signed by a configured JPKI trust anchor")
            issuer = crl.issuer.public_bytes()
            entries = revoked.setdefault(issuer, {})
            try:
                entries.update((entry.serial_number, _reason(entry)) for entry in crl)
            except ValueError:
                raise JpkiError("malformed", f"{label} has a malformed revocation entry") from None
            if crl.next_update_utc is not None:
                next_update[issuer] = max(crl.next_update_utc, next_update.get(issuer, crl.next_update_utc))
        return _Revocations(revoked, next_update)


def binding_message(challenge: bytes, credential_spki_der: bytes) -> bytes:
    """The string the card signs at enrolment (PROTOCOL.md section 3, step 2).

    It binds the person (card key) to this server challenge and to this device
    key, so neither a replayed signature nor a swapped device key is accepted.
    """
    spki_hash = hashlib.sha256(credential_spki_der).digest()
    return BINDING_PREFIX + _b64url(challenge) + b":" + _b64url(spki_hash)


def verify_binding_signature(verified: VerifiedJpki, message: bytes, signature: bytes) -> None:
    """Check the card's RSA PKCS#1 v1.5 SHA-256 signature over ``message``."""
    key = verified.certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise JpkiError("bad_algorithm", "the JPKI certificate does not hold an RSA key")
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise JpkiError("bad_signature", "the card signature does not verify over the enrolment binding") from None


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _aware_or_now(at: datetime.datetime | None) -> datetime.datetime:
    if at is None:
        return datetime.datetime.now(datetime.UTC)
    if at.tzinfo is None:
        raise ValueError("verification time must be timezone-aware")
    return at


def _parse_certificate(der: bytes) -> x509.Certificate:
    """Parse DER strictly, including every extension, so later checks meet no parse error."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.extensions  # noqa: B018 - forces extension parsing
    except (ValueError, TypeError):
        raise JpkiError("malformed", "the certificate is not a well-formed DER X.509 certificate") from None
    return certificate


def _check_algorithm(certificate: x509.Certificate) -> None:
    """J-LIS profile: RSA-2048 or larger key, sha256WithRSAEncryption signature (RFC 5280 section 4.1.1.2)."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise JpkiError("bad_algorithm", f"the certificate key must be RSA of at least {MIN_RSA_BITS} bits")
    if certificate.signature_algorithm_oid != SignatureAlgorithmOID.RSA_WITH_SHA256:
        raise JpkiError("bad_algorithm", "the certificate must be signed with sha256WithRSAEncryption")


def _check_validity(certificate: x509.Certificate, at: datetime.datetime) -> None:
    """RFC 5280 section 4.1.2.5: valid from notBefore through notAfter inclusive.

    Checked before the path so the person hears "expired", not "untrusted".
    """
    if at < certificate.not_valid_before_utc:
        raise JpkiError("not_yet_valid", "the JPKI certificate is not yet valid")
    if at > certificate.not_valid_after_utc:
        raise JpkiError("expired", "the JPKI certificate has expired")


def _check_key_usage(certificate: x509.Certificate) -> None:
    """RFC 5280 section 4.2.1.3: the profile's key usage is critical digitalSignature + nonRepudiation.

    nonRepudiation is cryptography's ``content_commitment``. Exactly those two: a key that
    may also encipher or sign certificates or CRLs is not a card signing key.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise JpkiError("bad_key_usage", "the certificate has no key usage extension") from None
    usage = extension.value
    if not extension.critical:
        raise JpkiError("bad_key_usage", "the key usage extension must be critical")
    others = (usage.key_encipherment, usage.data_encipherment, usage.key_agreement, usage.key_cert_sign,
              usage.crl_sign)
    if not (usage.digital_signature and usage.content_commitment) or any(others):
        raise JpkiError("bad_key_usage", "the key usage must be exactly digitalSignature and nonRepudiation")


def _policy_oid(certificate: x509.Certificate) -> str:
    """RFC 5280 section 4.2.1.4: exactly one JPKI signing policy (production or test card)."""
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        raise JpkiError("bad_policy", "the certificate has no certificate policies extension") from None
    found = [oid for oid in (p.policy_identifier.dotted_string for p in policies) if oid in ACCEPTED_POLICY_OIDS]
    if len(found) != 1:
        raise JpkiError("bad_policy", "the certificate does not carry exactly one JPKI signing certificate policy")
    return found[0]


def _read_attributes(certificate: x509.Certificate) -> JpkiAttributes:
    """The six subjectAltName otherName attributes (RFC 5280 section 4.2.1.6), each exactly once."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise JpkiError("missing_attribute", "the certificate has no subjectAltName with the JPKI attributes") from None
    field_of = {oid: name for name, oid in ATTRIBUTE_OIDS.items()}
    values: dict[str, list[str]] = {name: [] for name in ATTRIBUTE_OIDS}
    for other in san.get_values_for_type(x509.OtherName):
        name = field_of.get(other.type_id.dotted_string)
        if name is not None:
            values[name].append(_utf8_string(other.value, name))
    for name, found in values.items():
        if not found:
            raise JpkiError("missing_attribute", f"the certificate lacks the {name} attribute ({ATTRIBUTE_OIDS[name]})")
        if len(found) > 1:
            raise JpkiError("bad_attribute", f"the {name} attribute appears more than once")
    attributes = JpkiAttributes(**{name: found[0] for name, found in values.items()})
    _check_attribute_values(attributes)
    return attributes


def _utf8_string(value: bytes, name: str) -> str:
    """Decode an otherName value: cryptography hands over the content of its
    ``[0] EXPLICIT`` wrapper, which for JPKI is a DER UTF8String."""
    try:
        return asn1.decode_der(str, value)
    except ValueError:
        raise JpkiError("bad_attribute", f"the {name} attribute is not a DER UTF8String") from None


def _check_attribute_values(attributes: JpkiAttributes) -> None:
    """PROTOCOL.md section 3 value rules; the message names the attribute, never its value."""
    valid = {
        "name": bool(attributes.name),
        "name_substitution": _SUBSTITUTION.fullmatch(attributes.name_substitution) is not None,
        "gender": attributes.gender in GENDERS,
        "date_of_birth": _DATE_OF_BIRTH.fullmatch(attributes.date_of_birth) is not None,
        "address": len(attributes.address) <= MAX_ADDRESS_LENGTH,
        "address_substitution": _SUBSTITUTION.fullmatch(attributes.address_substitution) is not None,
    }
    for name, ok in valid.items():
        if not ok:
            raise JpkiError("bad_attribute", f"the {name} attribute has an invalid value")


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm):
        return False


def _reason(entry: x509.RevokedCertificate) -> str | None:
    """The CRLReason name of RFC 5280 section 5.3.1 (e.g. ``keyCompromise``), or None."""
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return None


def _fingerprint(location: Path | None) -> tuple[tuple[str, int, int], ...]:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in _files(location))


def _files(location: Path | None) -> list[Path]:
    if location is None or not location.exists():
        return []
    if location.is_dir():
        return sorted(p for p in location.iterdir() if p.is_file() and not p.name.startswith("."))
    return [location]


def _read_certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise JpkiError("malformed", f"JPKI trust anchor file {path} is not a PEM or DER certificate") from None


def _read_crl_files(location: Path | None) -> list[tuple[str, x509.CertificateRevocationList]]:
    if location is not None and not location.exists():
        raise JpkiError("malformed", f"JPKI CRL location {location} does not exist")
    return [(f"CRL file {path}", crl) for path in _files(location) for crl in _read_crls(path)]


def _read_crls(path: Path) -> list[x509.CertificateRevocationList]:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("no CRL in PEM file")
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        raise JpkiError("malformed", f"JPKI CRL file {path} is not a PEM or DER CRL") from None
