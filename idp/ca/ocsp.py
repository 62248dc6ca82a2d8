"""The trust service's OCSP responder (RFC 6960), as a pure function over DER.

The CA signs responses itself (RFC 6960 §4.2.2.2: the issuing CA is always an
authorized responder), so responses carry no certificates and name the responder by
key hash (§4.2.1, ResponderID byKey). A response is valid from `now` for
`RESPONSE_VALIDITY`: statuses come live from the database, so a short window keeps a
revocation visible to clients within minutes.

Decisions, with the section that drives them:

* Unparseable DER, a CertID hash algorithm other than SHA-1 or SHA-256, CertID hashes
  of the wrong length for their algorithm, or a nonce of 0 or more than 128 octets is
  answered ``malformedRequest`` without a signature (§4.2.1; RFC 9654 §2.1, which
  obsoletes RFC 8954 and raises its 32-octet nonce limit to 128). So is a request for
  more than one certificate: clients send one (RFC 5019 §2.1.1 requires it of
  lightweight clients) and `cryptography` parses and builds only single requests.
  And so is a negative serial number: no conforming certificate has one (RFC 5280
  §4.1.2.2) and `cryptography` cannot encode it in the response's CertID.
* A CertID whose issuerNameHash/issuerKeyHash do not name this CA is answered, signed,
  with certStatus ``unknown``: §2.2 defines "unknown" for exactly this case ("the
  request indicates an unrecognized issuer that is not served by this responder").
  ``unauthorized`` (§2.3) is meant for clients not allowed to ask; "unknown" also keeps
  one code path, so nonce echo and the response shape do not depend on the issuer.
* For this CA's certificates the caller's `lookup` decides. It must never answer
  "good" for a pending certificate: "unknown", or "revoked" with `certificateHold`
  (§2.2 allows "revoked" for certificates that are not valid for use).
* A request nonce is echoed in the response extensions (§4.4.1 as updated by RFC 9654).
* Like the CRL, a revocation reason of `unspecified` is sent as no revocationReason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from idp.ca.authority import SIGNATURE_HASH, CertificateAuthority, as_utc
from idp.ca.crl import parse_reason, reason_code

RESPONSE_VALIDITY = dt.timedelta(minutes=10)
"""nextUpdate - thisUpdate: how long a client may cache a response."""

ACCEPTED_HASHES: tuple[str, ...] = ("sha1", "sha256")
"""CertID hash algorithms accepted (`HashAlgorithm.name`): SHA-1 is what most clients
still send (RFC 5019 §2.1.1), SHA-256 what newer ones send."""

MAX_NONCE_LENGTH = 128  # RFC 9654 §2.1

_STATES = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}


@dataclass(frozen=True)
class CertStatus:
    """What the CA knows about one serial number; `reason` is a `crl.REASON_NAMES` name."""

    state: Literal["good", "revoked", "unknown"]
    revocation_time: dt.datetime | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        """Refuse contradictory statuses: only "revoked" has, and needs, a revocation time."""
        if self.state not in _STATES:
            raise ValueError(f"unknown certificate state {self.state!r}")
        if (self.state == "revoked") != (self.revocation_time is not None):
            raise ValueError("a revocation time is required for, and only for, state 'revoked'")
        if self.reason is not None:
            if self.state != "revoked":
                raise ValueError("only a revoked certificate has a revocation reason")
            parse_reason(self.reason)


UNKNOWN = CertStatus("unknown")


class _Query(NamedTuple):
    """The parts of a single-certificate OCSP request the responder uses."""

    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    nonce: bytes | None


def respond(
    ca: CertificateAuthority,
    request_der: bytes,
    *,
    lookup: Callable[[int], CertStatus],
    now: dt.datetime,
) -> bytes:
    """Answer a DER OCSP request with a DER OCSP response (RFC 6960 §4.2).

    `lookup` is called only for serial numbers this CA could have issued.
    """
    query = _parse(request_der)
    if query is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    status = lookup(query.serial_number) if _names_this_ca(ca, query) else UNKNOWN
    this_update = as_utc(now)
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash,
        issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial_number,
        algorithm=query.algorithm,
        cert_status=_STATES[status.state],
        this_update=this_update,
        next_update=this_update + RESPONSE_VALIDITY,
        revocation_time=as_utc(status.revocation_time) if status.revocation_time else None,
        revocation_reason=reason_code(status.reason),
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    return builder.sign(ca.private_key, SIGNATURE_HASH).public_bytes(serialization.Encoding.DER)


def _parse(request_der: bytes) -> _Query | None:
    """The request's CertID and nonce, or None if the request is malformed (see module doc)."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        nonce = _nonce(request)
    except (ValueError, UnsupportedAlgorithm, RuntimeError):  # RuntimeError: cryptography's answer to
        # a request naming several certificates, which this responder does not serve (RFC 6960 §4.1.1)
        return None
    if algorithm.name not in ACCEPTED_HASHES:
        return None
    if {len(request.issuer_name_hash), len(request.issuer_key_hash)} != {algorithm.digest_size}:
        return None
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
        return None
    if request.serial_number < 0:
        return None
    return _Query(algorithm, request.issuer_name_hash, request.issuer_key_hash, request.serial_number, nonce)


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    """The request's nonce value, if it sent one."""
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _names_this_ca(ca: CertificateAuthority, query: _Query) -> bool:
    """Whether the CertID's issuer hashes are this CA's (RFC 6960 §4.1.1)."""
    return (query.issuer_name_hash, query.issuer_key_hash) == ca.cert_id_hashes(query.algorithm)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response: RFC 6960 §4.2.1 carries no responseBytes for errors."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
