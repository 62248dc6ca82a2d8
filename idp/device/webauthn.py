"""A thin, strict wrapper around py_webauthn for the enrollment and login ceremonies.

References are to W3C Web Authentication Level 3 (WebAuthn L3). py_webauthn does the
full verification (CBOR/COSE decoding, attestation statements, signatures); this module
runs the cheap relying-party checks first so every refusal carries a precise
:class:`WebAuthnError` code, and turns anything unparseable into ``malformed``.
Pure code: no web framework, no storage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_backup_flags,
    parse_registration_credential_json,
    validate_certificate_chain,
)
from webauthn.helpers.cose import COSECRV, COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import DecodedEC2PublicKey
from webauthn.helpers.exceptions import InvalidCertificateChain, WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationObject,
    AuthenticatorData,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp.attestation import AttestationTrust
from idp.attestation.protection import (
    UNVERIFIED,
    AttestationRefused,
    KeyProtection,
    check_attestation_certificate,
    key_protection,
)

__all__ = [
    "WebAuthnError",
    "RegisteredCredential",
    "VerifiedAssertion",
    "creation_options",
    "request_options",
    "credential_id_from",
    "cose_public_key_to_spki",
    "verify_registration",
    "verify_assertion",
]

TIMEOUT_MS = 300_000
MIN_CHALLENGE_BYTES = 32  # PROTOCOL.md §3; WebAuthn L3 §13.4.3 asks for at least 16
MAX_USER_HANDLE_BYTES = 64  # WebAuthn L3 §5.4.3
MAX_CREDENTIAL_ID_BYTES = 1023  # WebAuthn L3 §7.1 (credentialId length step)
MAX_MEMBER_CHARS = 64 * 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_REGISTRATION_MEMBERS = ("clientDataJSON", "attestationObject")
_ASSERTION_MEMBERS = ("clientDataJSON", "authenticatorData", "signature")


class WebAuthnError(Exception):
    """A refused or unparseable WebAuthn response.

    ``code`` is one of: ``malformed``, ``type_mismatch``, ``challenge_mismatch``,
    ``origin_mismatch``, ``rp_id_mismatch``, ``user_not_present``, ``user_not_verified``,
    ``synced_key_refused``, ``unsupported_algorithm``, ``attestation_failed``,
    ``authenticator_refused`` (a model FIDO metadata reports revoked or compromised),
    ``bad_signature``, ``counter_regression``.
    """

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


@dataclass(frozen=True)
class RegisteredCredential:
    """A credential verified by the registration ceremony (WebAuthn L3 §7.1).

    ``attestation_verified`` is True only when the attestation statement's certificate
    chain was validated against a trusted root; ``none`` and self attestation never set
    it. ``key_protection`` is ``hardware`` only for a verified statement that also shows
    a hardware-protected key (:mod:`idp.attestation.protection`), else ``unverified``.
    """

    credential_id: bytes
    public_key_cose: bytes
    public_key: EllipticCurvePublicKey
    spki_der: bytes
    sign_count: int
    aaguid: str
    user_verified: bool
    backup_eligible: bool
    backed_up: bool
    attestation_format: str
    attestation_verified: bool
    key_protection: KeyProtection = UNVERIFIED


@dataclass(frozen=True)
class VerifiedAssertion:
    """The outcome of a verified authentication assertion (WebAuthn L3 §7.2).

    Callers store ``new_sign_count`` as the credential's signature counter.
    """

    credential_id: bytes
    new_sign_count: int
    user_verified: bool
    user_present: bool
    backed_up: bool
    backup_eligible: bool = False


def creation_options(
    *,
    rp_id: str,
    rp_name: str,
    user_handle: bytes,
    user_name: str,
    user_display_name: str,
    challenge: bytes,
    exclude_credentials: Sequence[bytes] = (),
) -> dict:
    """PublicKeyCredentialCreationOptions (WebAuthn L3 §5.4) as a JSON-ready dict.

    ES256 only, user verification required, discoverable credential preferred and
    ``direct`` attestation so that attestation can be checked when roots are configured.
    """
    _require_challenge(challenge)
    if not 0 < len(user_handle) <= MAX_USER_HANDLE_BYTES:
        raise ValueError(f"user_handle must be 1..{MAX_USER_HANDLE_BYTES} bytes")
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=bytes(user_handle),
        user_name=user_name,
        user_display_name=user_display_name,
        challenge=bytes(challenge),
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.DIRECT,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(exclude_credentials),
        supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
    )
    return json.loads(options_to_json(options))


def request_options(
    *, rp_id: str, challenge: bytes, allow_credentials: Sequence[bytes] = ()
) -> dict:
    """PublicKeyCredentialRequestOptions (WebAuthn L3 §5.5) as a JSON-ready dict,
    with user verification required."""
    _require_challenge(challenge)
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=bytes(challenge),
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allow_credentials),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return json.loads(options_to_json(options))


def credential_id_from(credential: Mapping) -> bytes:
    """The credential ID of a PublicKeyCredential JSON (WebAuthn L3 §5.1).

    ``rawId`` must be unpadded base64url of 1..1023 bytes and ``id`` must equal it, so the
    caller can look the credential up before verification.
    """
    if not isinstance(credential, Mapping):
        raise WebAuthnError("malformed", "credential is not a JSON object")
    raw_id = _b64decode(_member(credential, "rawId"), "rawId")
    if credential.get("id") != credential["rawId"]:
        raise WebAuthnError("malformed", "id and rawId differ")
    if not 0 < len(raw_id) <= MAX_CREDENTIAL_ID_BYTES:
        raise WebAuthnError("malformed", "credential ID length out of range")
    return raw_id


def cose_public_key_to_spki(cose: bytes) -> bytes:
    """SubjectPublicKeyInfo DER of an ES256 (P-256) COSE_Key (WebAuthn L3 §6.5.1.1)."""
    return _spki(_p256_key(cose))


def verify_registration(
    *,
    credential: Mapping,
    expected_challenge: bytes,
    expected_origins: Sequence[str],
    expected_rp_id: str,
    allow_synced: bool,
    attestation_trust: AttestationTrust | None,
) -> RegisteredCredential:
    """Verify a registration response (WebAuthn L3 §7.1, "Registering a New Credential").

    Requires user presence and verification, an ES256 P-256 key, and BE=0 unless
    ``allow_synced`` (L3 §6.1.3). The attestation statement is always verified
    (signature, format rules); whether it is *trusted* depends on its chain (§7.1 step
    "assess the attestation trustworthiness"): ``none``, self attestation and chains to
    no trusted root are enrolled with ``attestation_verified`` False, while a model
    whose FIDO metadata status is REVOKED or compromised is refused.
    """
    credential_id, members = _parse_credential(credential, _REGISTRATION_MEMBERS)
    _check_client_data(
        members["clientDataJSON"], "webauthn.create", expected_challenge, expected_origins
    )
    attestation = _attestation_object(members["attestationObject"])
    auth_data = attestation.auth_data
    _check_auth_data(auth_data, expected_rp_id, require_user_verification=True)
    attested = auth_data.attested_credential_data
    if attested is None or attested.credential_id != credential_id:
        raise WebAuthnError("malformed", "attested credential data missing or not for rawId")
    if auth_data.flags.be and not allow_synced:
        raise WebAuthnError("synced_key_refused", "backup-eligible (synced) credential refused")
    public_key = _p256_key(attested.credential_public_key)
    trust = attestation_trust or AttestationTrust()
    model = trust.model(attested.aaguid)
    if model is not None and model.refusal is not None:
        raise WebAuthnError("authenticator_refused", model.refusal)
    try:
        check_attestation_certificate(attestation, attested.aaguid)
    except AttestationRefused as exc:
        raise WebAuthnError("attestation_failed", str(exc)) from None
    roots = trust.roots_for(attested.aaguid)
    chained = _attestation_chains(attestation, roots)
    parsed = _library_credential(parse_registration_credential_json, credential, members)
    try:
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=list(expected_origins),
            require_user_verification=True,
            supported_pub_key_algs=[COSEAlgorithmIdentifier.ECDSA_SHA_256],
            pem_root_certs_bytes_by_fmt=(
                {attestation.fmt: list(roots)} if roots and (chained or attestation.fmt in _LIBRARY_ROOTED) else None),
        )
    except WebAuthnException as exc:
        raise WebAuthnError("attestation_failed", str(exc)) from exc
    except Exception as exc:  # malformed attestation statement deep in the library
        raise WebAuthnError("malformed", "attestation statement could not be parsed") from exc
    chained = chained or attestation.fmt in _LIBRARY_ROOTED
    return RegisteredCredential(
        credential_id=verified.credential_id,
        public_key_cose=verified.credential_public_key,
        public_key=public_key,
        spki_der=_spki(public_key),
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        user_verified=verified.user_verified,
        backup_eligible=auth_data.flags.be,
        backed_up=verified.credential_backed_up,
        attestation_format=attestation.fmt,
        attestation_verified=chained,
        key_protection=key_protection(attestation, chained=chained,
                                      metadata_key_protection=model.key_protection if model else None),
    )


def verify_assertion(
    *,
    credential: Mapping,
    expected_challenge: bytes,
    expected_origins: Sequence[str],
    expected_rp_id: str,
    credential_public_key_cose: bytes,
    current_sign_count: int,
    require_user_verification: bool = True,
) -> VerifiedAssertion:
    """Verify an authentication assertion (WebAuthn L3 §7.2).

    Checks type ``webauthn.get``, the challenge (constant time), the origin, the RP ID
    hash, UP and UV, the signature (py_webauthn), then the signature counter
    (L3 §6.1.1, §7.2 signCount step): when either count is non-zero the new one must be
    greater, else ``counter_regression`` — a cloned authenticator. The counter is
    judged only after the signature verified, so a forged response can never make a
    credential look cloned.
    """
    members = _assertion_members(credential)
    _check_client_data(
        members["clientDataJSON"], "webauthn.get", expected_challenge, expected_origins
    )
    auth_data = _authenticator_data(members["authenticatorData"])
    _check_auth_data(auth_data, expected_rp_id, require_user_verification)
    _p256_key(credential_public_key_cose)
    parsed = _library_credential(parse_authentication_credential_json, credential, members)
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=list(expected_origins),
            credential_public_key=credential_public_key_cose,
            credential_current_sign_count=0,  # judged below, after the signature
            require_user_verification=require_user_verification,
        )
    except WebAuthnException as exc:
        raise WebAuthnError("bad_signature", str(exc)) from exc
    new_count = verified.new_sign_count
    if (new_count or current_sign_count) and new_count <= current_sign_count:
        raise WebAuthnError(
            "counter_regression",
            f"signature counter {new_count} not above stored {current_sign_count}",
        )
    return VerifiedAssertion(
        credential_id=verified.credential_id,
        new_sign_count=new_count,
        user_verified=auth_data.flags.uv,
        user_present=auth_data.flags.up,
        backed_up=verified.credential_backed_up,
        backup_eligible=auth_data.flags.be,
    )


def _require_challenge(challenge: bytes) -> None:
    if len(challenge) < MIN_CHALLENGE_BYTES:
        raise ValueError(f"challenge must be at least {MIN_CHALLENGE_BYTES} bytes")


def _descriptors(credential_ids: Sequence[bytes]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=bytes(cid)) for cid in credential_ids]


def _b64decode(value: str, name: str) -> bytes:
    """Strict unpadded base64url (WebAuthn L3 §3, "Base64url Encoding")."""
    if len(value) % 4 == 1 or not _BASE64URL.fullmatch(value):
        raise WebAuthnError("malformed", f"{name} is not unpadded base64url")
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise WebAuthnError("malformed", f"{name} is not base64url") from exc
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != value:
        raise WebAuthnError("malformed", f"{name} is not canonical base64url")
    return decoded


def _b64encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _member(container: Mapping, name: str) -> str:
    value = container.get(name)
    if not isinstance(value, str):
        raise WebAuthnError("malformed", f"{name} missing or not a string")
    if len(value) > MAX_MEMBER_CHARS:
        raise WebAuthnError("malformed", f"{name} exceeds {MAX_MEMBER_CHARS} characters")
    return value


def _parse_credential(
    credential: Mapping, names: Sequence[str]
) -> tuple[bytes, dict[str, bytes]]:
    """Credential ID and decoded ``response`` members; other members are ignored."""
    credential_id = credential_id_from(credential)
    if credential.get("type") != "public-key":
        raise WebAuthnError("malformed", 'type is not "public-key"')
    response = credential.get("response")
    if not isinstance(response, Mapping):
        raise WebAuthnError("malformed", "response missing or not an object")
    return credential_id, {name: _b64decode(_member(response, name), name) for name in names}


def _assertion_members(credential: Mapping) -> dict[str, bytes]:
    """Assertion members plus the optional ``userHandle`` (null or base64url)."""
    _, members = _parse_credential(credential, _ASSERTION_MEMBERS)
    if credential["response"].get("userHandle") is not None:
        members["userHandle"] = _b64decode(
            _member(credential["response"], "userHandle"), "userHandle"
        )
    return members


def _library_credential(
    parse: Callable[[dict[str, Any]], Any], credential: Mapping, members: dict[str, bytes]
) -> Any:
    """The credential rebuilt from validated members only, parsed by py_webauthn."""
    rebuilt = {
        "id": credential["rawId"],
        "rawId": credential["rawId"],
        "type": "public-key",
        "response": {name: _b64encode(value) for name, value in members.items()},
    }
    try:
        return parse(rebuilt)
    except WebAuthnException as exc:
        raise WebAuthnError("malformed", str(exc)) from exc


def _check_client_data(
    client_data_json: bytes,
    expected_type: str,
    expected_challenge: bytes,
    expected_origins: Sequence[str],
) -> None:
    """CollectedClientData checks (WebAuthn L3 §5.8.1; §7.1 and §7.2 client data steps)."""
    if isinstance(expected_origins, str):
        raise TypeError("expected_origins must be a sequence of origins, not a string")
    try:
        client_data = json.loads(client_data_json.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WebAuthnError("malformed", "clientDataJSON is not UTF-8 JSON") from exc
    if not isinstance(client_data, dict):
        raise WebAuthnError("malformed", "clientDataJSON is not an object")
    client_type, challenge, origin = (
        _member(client_data, name) for name in ("type", "challenge", "origin")
    )
    if client_type != expected_type:
        raise WebAuthnError("type_mismatch", f'client data type is not "{expected_type}"')
    if not hmac.compare_digest(_b64decode(challenge, "challenge"), expected_challenge):
        raise WebAuthnError("challenge_mismatch", "challenge is not this ceremony's")
    if origin not in expected_origins:
        raise WebAuthnError("origin_mismatch", f"origin {origin!r} is not allowed")
    if client_data.get("crossOrigin") is True:
        raise WebAuthnError("origin_mismatch", "cross-origin (embedded) ceremony refused")
    token_binding = client_data.get("tokenBinding")
    if isinstance(token_binding, dict) and token_binding.get("status") not in (
        "present",
        "supported",
    ):
        raise WebAuthnError("malformed", "tokenBinding status is not recognised")


def _authenticator_data(data: bytes) -> AuthenticatorData:
    try:
        return parse_authenticator_data(data)
    except Exception as exc:
        raise WebAuthnError("malformed", "authenticatorData could not be parsed") from exc


def _attestation_object(data: bytes) -> AttestationObject:
    try:
        attestation = parse_attestation_object(data)
    except Exception as exc:
        raise WebAuthnError("malformed", "attestationObject could not be parsed") from exc
    if not isinstance(attestation.fmt, str):
        raise WebAuthnError("malformed", "attestation fmt is not a string")
    return attestation


def _check_auth_data(
    auth_data: AuthenticatorData, expected_rp_id: str, require_user_verification: bool
) -> None:
    """RP ID hash and flag checks (WebAuthn L3 §6.1; §7.1 and §7.2 authData steps)."""
    expected_hash = hashlib.sha256(expected_rp_id.encode("utf-8")).digest()
    if not hmac.compare_digest(auth_data.rp_id_hash, expected_hash):
        raise WebAuthnError("rp_id_mismatch", "RP ID hash is not this RP's")
    if not auth_data.flags.up:
        raise WebAuthnError("user_not_present", "user presence flag not set")
    if require_user_verification and not auth_data.flags.uv:
        raise WebAuthnError("user_not_verified", "user verification flag not set")
    try:
        parse_backup_flags(auth_data.flags)
    except WebAuthnException as exc:
        raise WebAuthnError("malformed", "backed up but not backup eligible") from exc


_LIBRARY_ROOTED = frozenset({"android-key", "apple", "android-safetynet"})
"""Formats py_webauthn always chains to the platform roots it ships (or refuses)."""
_ROOTS_OPTIONAL = frozenset({"packed", "tpm", "fido-u2f"})


def _attestation_chains(attestation: AttestationObject, roots: list[bytes]) -> bool:
    """Whether a ``packed``/``tpm``/``fido-u2f`` x5c chains to one of ``roots`` (§7.1 trust step).

    py_webauthn passes any chain for these formats when given no roots and refuses one
    that misses the roots it is given; a genuine statement from a model nobody vouches
    for is neither, so the chain is judged here and the library is handed the roots
    only when they fit (it then validates the chain again, with the signature).
    """
    x5c = attestation.att_stmt.x5c
    if attestation.fmt not in _ROOTS_OPTIONAL or not x5c or not roots:
        return False
    try:
        return validate_certificate_chain(x5c=list(x5c), pem_root_certs_bytes=roots)
    except InvalidCertificateChain:
        return False


def _p256_key(cose: bytes) -> EllipticCurvePublicKey:
    """The P-256 public key of an ES256 COSE_Key (WebAuthn L3 §5.8.5, §6.5.1.1)."""
    try:
        if cose[:1] == b"\x04":  # a raw U2F point, which the library would accept
            raise ValueError("not a COSE_Key")
        decoded = decode_credential_public_key(cose)
    except Exception as exc:
        raise WebAuthnError("malformed", "credential public key is not a COSE_Key") from exc
    if not (
        isinstance(decoded, DecodedEC2PublicKey)
        and decoded.alg == COSEAlgorithmIdentifier.ECDSA_SHA_256
        and decoded.crv == COSECRV.P256
    ):
        raise WebAuthnError("unsupported_algorithm", "credential key is not ES256 on P-256")
    if not (isinstance(decoded.x, bytes) and isinstance(decoded.y, bytes)) or (
        len(decoded.x),
        len(decoded.y),
    ) != (32, 32):
        raise WebAuthnError("malformed", "P-256 coordinates are not 32 bytes")
    try:
        return decoded_public_key_to_cryptography(decoded)
    except Exception as exc:
        raise WebAuthnError("malformed", "P-256 point is not on the curve") from exc


def _spki(key: EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
