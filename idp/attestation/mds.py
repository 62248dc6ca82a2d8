"""The FIDO Metadata Service v3 BLOB: attestation roots, key protection and status per AAGUID.

The BLOB is a JWS (FIDO MDS3 §3.1.7) whose ``x5c`` chains to the FIDO Alliance's root.
Parsing and the JWS/chain signatures are the `fido2` package's (``fido2.mds3.parse_blob``):
Yubico's maintained implementation, which also types every statement field (status
reports, keyProtection, attestationRootCertificates), so nothing here reads MDS JSON by
hand. ``parse_blob`` checks signatures only; the rest of the BLOB processing rules
(§3.2) are applied here: each certificate of the chain is within its validity period and
not revoked on a CRL its issuer signed (the operator downloads the CRLs with the BLOB,
``IDP_FIDO_MDS_CRLS``), and the BLOB's ``nextUpdate`` has not passed.

Any failure stops the server at start with one line (:class:`MetadataError`): trusting
an unverifiable BLOB would let anyone declare a software key "hardware".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.mds3 import AuthenticatorStatus, MetadataBlobPayload, MetadataBlobPayloadEntry, parse_blob
from fido2.webauthn import Aaguid

DEFAULT_ROOT = Path(__file__).with_name("fido-mds-root.pem")
"""The FIDO Alliance's MDS root: GlobalSign Root CA - R3 (SHA-256 fingerprint
CB:B5:22:D7:B7:F1:27:AD:6A:01:13:86:5B:DF:1C:D4:10:2E:7D:07:59:AF:63:5A:7C:F4:72:0D:C9:63:C5:3B)."""

REFUSED_STATUSES = frozenset({
    AuthenticatorStatus.REVOKED,
    AuthenticatorStatus.USER_VERIFICATION_BYPASS,
    AuthenticatorStatus.ATTESTATION_KEY_COMPROMISE,
    AuthenticatorStatus.USER_KEY_REMOTE_COMPROMISE,
    AuthenticatorStatus.USER_KEY_PHYSICAL_COMPROMISE,
})
"""FIDO MDS3 §3.1.4 AuthenticatorStatus values after which a model's keys prove nothing."""


class MetadataError(ValueError):
    """A BLOB, root or CRL the server refuses to start with (one line)."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the BLOB says about one authenticator model (one AAGUID)."""

    roots_pem: tuple[bytes, ...]
    key_protection: tuple[str, ...] | None
    refusal: str | None
    """Why enrolment with this model is refused (a REVOKED or compromise status), else None."""


class MetadataService:
    """The verified BLOB's entries, looked up by AAGUID."""

    def __init__(self, payload: MetadataBlobPayload) -> None:
        self.serial = payload.no
        self._entries = {bytes(e.aaguid): e for e in payload.entries if e.aaguid}

    @classmethod
    def load(cls, blob: Path, *, root: Path | None, crls: Path | None,
             now: dt.datetime | None = None) -> MetadataService:
        """Read and verify the BLOB at ``blob`` (FIDO MDS3 §3.2); raises MetadataError."""
        now = now or dt.datetime.now(dt.timezone.utc)
        root_path = root or DEFAULT_ROOT
        try:
            data = blob.read_bytes().strip()
            root_cert = x509.load_pem_x509_certificate(root_path.read_bytes())
        except OSError as exc:
            raise MetadataError(f"FIDO metadata: {exc.filename}: {exc.strerror}") from None
        except ValueError:
            raise MetadataError(f"IDP_FIDO_MDS_ROOT {root_path}: not a PEM certificate") from None
        chain = _header_chain(data, blob)
        try:
            payload = parse_blob(data, root_cert.public_bytes(serialization.Encoding.DER))
        except Exception:  # fido2 raises cryptography's InvalidSignature, ValueError or KeyError
            raise MetadataError(f"IDP_FIDO_MDS {blob}: the BLOB's signature does not verify against "
                                f"IDP_FIDO_MDS_ROOT {root_path}") from None
        _check_chain(chain + [root_cert], _load_crls(crls), now)
        if payload.next_update < now.date():
            raise MetadataError(f"IDP_FIDO_MDS {blob}: BLOB no. {payload.no} is stale "
                                f"(nextUpdate {payload.next_update.isoformat()}); download the current one")
        return cls(payload)

    def model(self, aaguid: bytes) -> ModelMetadata | None:
        """The model's metadata, or None when the BLOB has no entry for ``aaguid``."""
        entry = self._entries.get(bytes(aaguid))
        if entry is None or aaguid == bytes(16):
            return None
        statement = entry.metadata_statement
        roots = tuple(_pem(der) for der in statement.attestation_root_certificates) if statement else ()
        protection = tuple(statement.key_protection) if statement else None
        return ModelMetadata(roots_pem=roots, key_protection=protection, refusal=_refusal(entry))


def _refusal(entry: MetadataBlobPayloadEntry) -> str | None:
    """REVOKED anywhere is final; otherwise the latest status report decides (MDS3 §3.1.4)."""
    reports = list(entry.status_reports)
    if any(r.status == AuthenticatorStatus.REVOKED for r in reports):
        return f"authenticator model {Aaguid(bytes(entry.aaguid or bytes(16)))} is REVOKED in FIDO metadata"
    dated = [r for r in reports if r.effective_date is not None]
    latest = max(dated, key=lambda r: r.effective_date) if dated else (reports[-1] if reports else None)
    if latest is not None and latest.status in REFUSED_STATUSES:
        return f"authenticator model {Aaguid(bytes(entry.aaguid or bytes(16)))} has status {latest.status.value}"
    return None


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _header_chain(data: bytes, blob: Path) -> list[x509.Certificate]:
    """The JWS header's x5c (RFC 7515 §4.1.6), which MDS3 §3.1.7 requires."""
    try:
        header_b64 = data.split(b".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(header_b64 + b"=" * (-len(header_b64) % 4)))
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    except (ValueError, KeyError, TypeError):
        raise MetadataError(f"IDP_FIDO_MDS {blob}: not a JWS with an x5c certificate chain") from None
    if not chain:
        raise MetadataError(f"IDP_FIDO_MDS {blob}: the x5c certificate chain is empty")
    return chain


def _load_crls(path: Path | None) -> list[x509.CertificateRevocationList]:
    if path is None:
        return []
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    crls = []
    for file in files:
        data = file.read_bytes()
        try:
            if b"-----BEGIN X509 CRL-----" in data:
                crls.append(x509.load_pem_x509_crl(data))
            else:
                crls.append(x509.load_der_x509_crl(data))
        except ValueError:
            raise MetadataError(f"IDP_FIDO_MDS_CRLS {file}: not a CRL") from None
    return crls


def _check_chain(chain: Sequence[x509.Certificate], crls: Iterable[x509.CertificateRevocationList],
                 now: dt.datetime) -> None:
    """Validity of every certificate and revocation of every non-root one (RFC 5280 §6.3)."""
    crls = list(crls)
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise MetadataError(f"FIDO metadata certificate {cert.subject.rfc4514_string()} is outside its validity")
    for cert, issuer in zip(chain, chain[1:]):
        crl = _current_crl(crls, issuer, now)
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise MetadataError(f"FIDO metadata certificate {cert.subject.rfc4514_string()} is revoked")


def _current_crl(crls: list[x509.CertificateRevocationList], issuer: x509.Certificate,
                 now: dt.datetime) -> x509.CertificateRevocationList:
    """The CRL ``issuer`` signed that is current now; none is a refusal (fail closed)."""
    for crl in crls:
        if crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise MetadataError(f"IDP_FIDO_MDS_CRLS: the CRL of {issuer.subject.rfc4514_string()} has expired")
            return crl
    raise MetadataError(f"IDP_FIDO_MDS_CRLS: no CRL signed by {issuer.subject.rfc4514_string()}")
