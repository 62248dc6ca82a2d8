"""``verified_claims`` for the financial category (OpenID Identity Assurance 1.0, final).

Request (OpenID Connect for Identity Assurance 1.0 §5): ``verified_claims`` inside the
``claims`` parameter's ``userinfo`` or ``id_token`` member, an object (or array of
objects) with ``verification`` and a non-empty ``claims`` object; any ``purpose`` must
be 3–300 characters (§5.4), else ``invalid_request``.

Response (Schema Definition 1.0 §5): ``verification`` with ``trust_framework``
``jp_aml`` (Act on Prevention of Transfer of Criminal Proceeds; the JPKI signature is the
method of its Ordinance Art. 6(1)(i)(wa)), ``time`` of the JPKI proof, and one
``electronic_signature`` evidence: ``signature_type`` ``jp_jpki``, ``issuer`` J-LIS,
``created_at`` the proof time, and ``serial_number``.

The serial number: §5.1.1.4 makes it REQUIRED, but Japanese rules restrict disclosing a
JPKI certificate's serial (it is a lifelong tracking handle, usable to query J-LIS). We
therefore release a *pairwise certificate reference*: HMAC(salt, sector ‖ keyed digest of
the card serial), encoded as a decimal string. It identifies the same card certificate
to the same bank consistently (so a renewal is visible as a new value), cannot be
reversed to the real serial, and differs between sectors, so two banks in different
sectors cannot join on it. The member keeps its type (string) and presence, so the
evidence validates against the official schema.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping

from idp.storage.models import Account, JpkiBinding

TRUST_FRAMEWORK = "jp_aml"
EVIDENCE_TYPE = "electronic_signature"
SIGNATURE_TYPE = "jp_jpki"
ISSUER = "J-LIS"
CLAIMS = ("name", "birthdate", "address", "gender")
PURPOSE_MIN, PURPOSE_MAX = 3, 300


class VerifiedClaimsRequestError(ValueError):
    """Shape errors in a verified_claims request: ``invalid_request``."""


def check_purpose(spec: Any, where: str) -> None:
    if isinstance(spec, dict) and "purpose" in spec:
        purpose = spec["purpose"]
        if not isinstance(purpose, str) or not PURPOSE_MIN <= len(purpose) <= PURPOSE_MAX:
            raise VerifiedClaimsRequestError(f"{where}.purpose must be {PURPOSE_MIN} to {PURPOSE_MAX} characters")


def check_request(value: Any, where: str) -> None:
    """Validate one ``verified_claims`` request element (or an array of them)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise VerifiedClaimsRequestError(f"{where} must not be empty")
    for index, item in enumerate(items):
        path = f"{where}[{index}]" if isinstance(value, list) else where
        if not isinstance(item, dict):
            raise VerifiedClaimsRequestError(f"{path} must be an object")
        if not isinstance(item.get("verification"), dict):
            raise VerifiedClaimsRequestError(f"{path}.verification must be an object")
        claims = item.get("claims")
        if not isinstance(claims, dict) or not claims:
            raise VerifiedClaimsRequestError(f"{path}.claims must be a non-empty object")
        for name, spec in claims.items():
            if spec is not None and not isinstance(spec, dict):
                raise VerifiedClaimsRequestError(f"{path}.claims.{name} must be null or an object")
            check_purpose(spec, f"{path}.claims.{name}")


def _framework_accepted(verification: Mapping[str, Any]) -> bool:
    """§6 constraints: a requested trust_framework value/values must include ours."""
    spec = verification.get("trust_framework")
    if not isinstance(spec, dict):
        return True
    if "value" in spec:
        return spec["value"] == TRUST_FRAMEWORK
    if "values" in spec:
        return TRUST_FRAMEWORK in (spec["values"] or [])
    return True


def certificate_reference(binding: JpkiBinding, sector: str, salt: bytes) -> str:
    mac = hmac.new(salt, b"ida-evidence:" + sector.encode() + b"\x00" + binding.jpki_serial_digest.encode(),
                   hashlib.sha256).digest()
    return str(int.from_bytes(mac[:16], "big"))


def build(request: Any, *, account: Account, values: Mapping[str, Any], binding: JpkiBinding | None,
          sector: str, salt: bytes) -> dict[str, Any] | None:
    """The verified_claims to release for one request element, or None when nothing fits (§5.2)."""
    if binding is None or binding.revoked_at is not None or not account.attributes_current:
        return None
    items = request if isinstance(request, list) else [request]
    for item in items:
        if not _framework_accepted(item["verification"]):
            continue
        claims = {name: values[name] for name in item["claims"] if name in CLAIMS and name in values}
        if not claims:
            continue
        proven = binding.verified_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "verification": {
                "trust_framework": TRUST_FRAMEWORK,
                "time": proven,
                "evidence": [{
                    "type": EVIDENCE_TYPE,
                    "signature_type": SIGNATURE_TYPE,
                    "issuer": ISSUER,
                    "serial_number": certificate_reference(binding, sector, salt),
                    "created_at": proven,
                }],
            },
            "claims": claims,
        }
    return None


def metadata() -> dict[str, Any]:
    """Discovery members (OpenID Connect for Identity Assurance 1.0 §7)."""
    return {
        "verified_claims_supported": True,
        "trust_frameworks_supported": [TRUST_FRAMEWORK],
        "evidence_supported": [EVIDENCE_TYPE],
        "claims_in_verified_claims_supported": list(CLAIMS),
    }
