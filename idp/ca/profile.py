"""The device certificate profile: what the trust service certifies over a phone's key.

A device certificate is an X.509 v3 end-entity certificate (RFC 5280) over the ECDSA
P-256 public key of a WebAuthn credential held in a phone's secure area, signed
ecdsa-with-SHA256 by the CA in `idp.ca.authority`.

Subject: ``C=JP, O=<CA organization>, CN=<account_ref>``. The account is named by an
opaque identifier in commonName. X.520 serialNumber would suggest a registration
number such as the individual number, which must never appear; X.520 pseudonym is read
as a stand-in for a natural person's name, and ETSI/eIDAS-style profiles then expect
further person attributes beside it. commonName is what JPKI does for its own signing certificates
(``CN=<serial-like string>``), and every relying-party library shows it. The value is
never personal data: a 12-digit value, which could be an individual number, is refused.

Certificate policies (RFC 5280 §4.2.1.4), one per certificate, under a private arc:

=================================  =========================================================
OID                                meaning
=================================  =========================================================
1.3.6.1.4.1.32473.1.1              arc: this trust service's certificate policies
1.3.6.1.4.1.32473.1.1.1            ``POLICY_DEVICE_HARDWARE``: the key's attestation was
                                   verified against a trusted root and shows hardware
                                   protection (secure element / TEE)
1.3.6.1.4.1.32473.1.1.2            ``POLICY_DEVICE_SOFTWARE``: no verified hardware
                                   attestation (none sent, not verifiable, or a synced
                                   passkey allowed in development)
=================================  =========================================================

32473 is the private enterprise number IANA reserves for documentation (RFC 5612);
a production deployment replaces it with its own registered PEN before issuing.

No extendedKeyUsage: RFC 5280 §4.2.1.12 makes it optional, pkilint does not ask for it,
and no EKU purpose fits a WebAuthn assertion key, so adding one would only restrict.
"""

from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.ca.authority import COUNTRY, SIGNATURE_HASH, CertificateAuthority, as_utc, key_usage

POLICY_ARC = "1.3.6.1.4.1.32473.1.1"
POLICY_DEVICE_HARDWARE = x509.ObjectIdentifier(f"{POLICY_ARC}.1")
POLICY_DEVICE_SOFTWARE = x509.ObjectIdentifier(f"{POLICY_ARC}.2")

_INDIVIDUAL_NUMBER = re.compile(r"\d{12}")


def new_serial_number() -> int:
    """A fresh certificate serial number: positive, 159 random bits.

    RFC 5280 §4.1.2.2 caps serials at 20 octets; the CA/Browser Forum baseline asks for
    at least 64 bits from a CSPRNG so serials are unpredictable.
    """
    return x509.random_serial_number()


def issue_device_certificate(
    ca: CertificateAuthority,
    *,
    public_key: ec.EllipticCurvePublicKey,
    serial_number: int,
    account_ref: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    crl_url: str,
    ocsp_url: str,
    ca_issuers_url: str,
    hardware_attested: bool,
) -> x509.Certificate:
    """Issue a device certificate over `public_key` for the account `account_ref`.

    The validity is exactly [`not_before`, `not_after`] (the caller has already clamped
    `not_after` to the JPKI certificate's notAfter), shortened only if the CA certificate
    expires first: a certificate outliving its issuer could never validate.
    """
    _check_device_key(public_key)
    _check_account_ref(account_ref)
    start, end = _validity(ca, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(ca, account_ref))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for extension, critical in _extensions(ca, public_key, crl_url, ocsp_url, ca_issuers_url, hardware_attested):
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca.private_key, SIGNATURE_HASH)


def _check_device_key(public_key: ec.EllipticCurvePublicKey) -> None:
    """Only P-256 keys are certified: the secure-area keys WebAuthn ES256 produces."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("a device key must be an ECDSA P-256 public key")


def _check_account_ref(account_ref: str) -> None:
    """Refuse identifiers that do not fit commonName or could be an individual number."""
    if not 1 <= len(account_ref) <= 64:
        raise ValueError("account_ref must be 1 to 64 characters (ub-common-name, RFC 5280 A.1)")
    if _INDIVIDUAL_NUMBER.fullmatch(account_ref):
        raise ValueError("account_ref must be opaque; a 12-digit value could be an individual number")


def _validity(
    ca: CertificateAuthority, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The certificate's validity: the caller's, ending no later than the CA certificate."""
    start = as_utc(not_before)
    end = min(as_utc(not_after), ca.certificate.not_valid_after_utc)
    if start >= end:
        raise ValueError("the validity period is empty (not_before is not before not_after or the CA's expiry)")
    return start, end


def _subject(ca: CertificateAuthority, account_ref: str) -> x509.Name:
    """C=JP, O=<CA organization>, CN=<account_ref>."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, account_ref),
        ]
    )


def _extensions(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    crl_url: str,
    ocsp_url: str,
    ca_issuers_url: str,
    hardware_attested: bool,
) -> list[tuple[x509.ExtensionType, bool]]:
    """The profile's extensions with their criticality, RFC 5280 §4.2 section by section."""
    policy = POLICY_DEVICE_HARDWARE if hardware_attested else POLICY_DEVICE_SOFTWARE
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),  # §4.2.1.9
        (_device_key_usage(), True),  # §4.2.1.3
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),  # §4.2.1.2
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.subject_key_identifier), False),  # §4.2.1.1
        (_crl_distribution_points(crl_url), False),  # §4.2.1.13
        (_authority_information_access(ocsp_url, ca_issuers_url), False),  # §4.2.2.1
        (x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), False),  # §4.2.1.4
    ]


def _device_key_usage() -> x509.KeyUsage:
    """digitalSignature only: the key signs WebAuthn assertions and nothing else."""
    return key_usage("digital_signature")


def _crl_distribution_points(crl_url: str) -> x509.CRLDistributionPoints:
    """One distribution point whose fullName is the CRL's URI (no reasons, no cRLIssuer)."""
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None, crl_issuer=None
    )
    return x509.CRLDistributionPoints([point])


def _authority_information_access(ocsp_url: str, ca_issuers_url: str) -> x509.AuthorityInformationAccess:
    """The OCSP responder (RFC 6960) and where to fetch the CA certificate."""
    return x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)),
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers_url)
            ),
        ]
    )
