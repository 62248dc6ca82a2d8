"""Certificate revocation lists for the trust service (RFC 5280 §5).

The CRL is a complete CRL (never a delta) with the two extensions §5.2 requires of a
conforming CA: authorityKeyIdentifier (§5.2.1) and cRLNumber (§5.2.3). Entries carry a
reasonCode (§5.3.1) except for `unspecified`, which §5.3.1 says SHOULD be conveyed by
leaving the reasonCode out.

Accepted reason names are those of §5.3.1 except `removeFromCRL`, which only a delta
CRL may use and this CA issues none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idp.ca.authority import SIGNATURE_HASH, CertificateAuthority, as_utc

REASON_NAMES: tuple[str, ...] = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
)
"""RFC 5280 §5.3.1 reason names this CA accepts, in reason-code order."""

_BY_LOWER_NAME = {name.lower(): name for name in REASON_NAMES}
_MAX_CRL_NUMBER = 2**159  # §5.2.3: a CRL number fits in 20 octets


def parse_reason(name: str) -> x509.ReasonFlags:
    """The `x509.ReasonFlags` for an RFC 5280 reason name (case-insensitive).

    Raises ValueError naming the accepted values for anything else, so an operator
    typing `idp ca revoke SERIAL --reason R` sees what to type instead.
    """
    canonical = _BY_LOWER_NAME.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown revocation reason {name!r}; use one of: {', '.join(REASON_NAMES)}")
    return x509.ReasonFlags(canonical)


def reason_code(name: str | None) -> x509.ReasonFlags | None:
    """The reason to encode for `name`, or None when the reasonCode must be absent.

    Both no reason and `unspecified` are encoded as no reasonCode (§5.3.1); OCSP's
    revocationReason (RFC 6960 §4.2.1) reuses this so the CRL and OCSP always agree.
    """
    if name is None:
        return None
    flag = parse_reason(name)
    return None if flag is x509.ReasonFlags.unspecified else flag


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as the CRL lists it; `reason` is a name from REASON_NAMES."""

    serial_number: int
    revocation_date: dt.datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        """Reject unknown reason names when the entry is made, not when the CRL is built."""
        if self.reason is not None:
            parse_reason(self.reason)


def build_crl(
    ca: CertificateAuthority,
    *,
    revoked: Iterable[RevokedEntry],
    crl_number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    """A DER CRL listing `revoked`, signed by the CA.

    `crl_number` must grow with every CRL the CA issues (§5.2.3); the caller keeps the
    counter. nextUpdate is mandatory for conforming CAs (§5.1.2.5).
    """
    start, end = as_utc(this_update), as_utc(next_update)
    if end <= start:
        raise ValueError("next_update must be after this_update")
    if not 0 <= crl_number < _MAX_CRL_NUMBER:
        raise ValueError("crl_number must be a non-negative integer of at most 20 octets")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.subject_key_identifier), critical=False
        )
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(_revoked_certificate(entry))
    return builder.sign(ca.private_key, SIGNATURE_HASH).public_bytes(serialization.Encoding.DER)


def _revoked_certificate(entry: RevokedEntry) -> x509.RevokedCertificate:
    """The CRL entry for `entry`, with a non-critical reasonCode unless it must be absent."""
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial_number)
        .revocation_date(as_utc(entry.revocation_date))
    )
    flag = reason_code(entry.reason)
    if flag is not None:
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()
