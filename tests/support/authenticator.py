"""A software WebAuthn authenticator and client for tests, benchmarks and conformance runs.

It produces the PublicKeyCredential JSON a browser would send (WebAuthn L3 §5.1, all
binary members unpadded base64url) for ES256 credentials, and can be told to misbehave
(wrong origin, RP ID hash, flags, challenge, type, counter or signing key) to exercise
the relying party's refusals. Depends only on cryptography and cbor2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40
ATTESTATIONS = ("none", "packed-self", "packed")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_es256(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The COSE_Key of a P-256 public key (kty EC2, alg ES256, crv P-256)."""
    numbers = public_key.public_numbers()
    return cbor2.dumps(
        {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
    )


def sign_es256(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def _with_flag(flags: int, flag: int, on: bool) -> int:
    return flags | flag if on else flags & ~flag


@dataclass
class _Credential:
    private_key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    counter: int


class SoftAuthenticator:
    """An ES256 platform authenticator bound to one RP ID and origin.

    ``attestation`` is ``"none"``, ``"packed-self"`` or ``"packed"`` (with
    ``attestation_key`` and ``attestation_chain``, DER certificates leaf first).
    The counter of each credential starts at ``sign_count_start`` and is incremented
    before every assertion signature.
    """

    def __init__(
        self,
        rp_id: str,
        origin: str,
        *,
        backup_eligible: bool = False,
        user_verifying: bool = True,
        attestation: str = "none",
        aaguid: bytes = bytes(16),
        sign_count_start: int = 0,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
        attestation_chain: tuple[bytes, ...] = (),
    ) -> None:
        if attestation not in ATTESTATIONS:
            raise ValueError(f"attestation must be one of {ATTESTATIONS}")
        if attestation == "packed" and not (attestation_key and attestation_chain):
            raise ValueError("packed attestation needs attestation_key and attestation_chain")
        self.rp_id = rp_id
        self.origin = origin
        self.backup_eligible = backup_eligible
        self.user_verifying = user_verifying
        self.attestation = attestation
        self.aaguid = aaguid
        self.sign_count_start = sign_count_start
        self.attestation_key = attestation_key
        self.attestation_chain = tuple(attestation_chain)
        self._credentials: dict[bytes, _Credential] = {}
        self._latest: bytes | None = None

    @property
    def credential_id(self) -> bytes:
        """The most recently created credential's ID."""
        if self._latest is None:
            raise LookupError("no credential created yet")
        return self._latest

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The most recently created credential's private key."""
        return self._credentials[self.credential_id].private_key

    def public_key_spki_der(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def create(
        self,
        options: dict,
        *,
        origin: str | None = None,
        rp_id_hash_override: bytes | None = None,
        flags_override: int | None = None,
        challenge_override: bytes | None = None,
        type_override: str | None = None,
    ) -> dict:
        """Answer navigator.credentials.create() for PublicKeyCredentialCreationOptions JSON."""
        options = options.get("publicKey", options)
        credential_id = os.urandom(32)
        private_key = ec.generate_private_key(ec.SECP256R1())
        flags = FLAG_UP | FLAG_AT | self._default_flags()
        auth_data = (
            self._auth_data_prefix(rp_id_hash_override, flags_override, flags, self.sign_count_start)
            + self.aaguid
            + len(credential_id).to_bytes(2, "big")
            + credential_id
            + cose_es256(private_key.public_key())
        )
        client_data = self._client_data(
            type_override or "webauthn.create", options, challenge_override, origin
        )
        attestation_object = cbor2.dumps(
            {
                "fmt": "none" if self.attestation == "none" else "packed",
                "attStmt": self._att_stmt(private_key, auth_data, client_data),
                "authData": auth_data,
            }
        )
        self._credentials[credential_id] = _Credential(
            private_key, b64url_decode(options["user"]["id"]), self.sign_count_start
        )
        self._latest = credential_id
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict,
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        counter: int | None = None,
        uv: bool | None = None,
        up: bool | None = None,
        rp_id_hash_override: bytes | None = None,
        challenge_override: bytes | None = None,
        type_override: str | None = None,
        sign_with: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict:
        """Answer navigator.credentials.get() for PublicKeyCredentialRequestOptions JSON.

        ``counter`` sends that signature count without touching the stored one (a clone).
        """
        options = options.get("publicKey", options)
        credential_id = credential_id or self.credential_id
        credential = self._credentials[credential_id]
        if counter is None:
            credential.counter += 1
            counter = credential.counter
        flags = self._default_flags() | FLAG_UP
        if uv is not None:
            flags = _with_flag(flags, FLAG_UV, uv)
        if up is not None:
            flags = _with_flag(flags, FLAG_UP, up)
        auth_data = self._auth_data_prefix(rp_id_hash_override, None, flags, counter)
        client_data = self._client_data(
            type_override or "webauthn.get", options, challenge_override, origin
        )
        signature = sign_es256(
            sign_with or credential.private_key, auth_data + hashlib.sha256(client_data).digest()
        )
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def _default_flags(self) -> int:
        flags = FLAG_UV if self.user_verifying else 0
        return flags | (FLAG_BE | FLAG_BS if self.backup_eligible else 0)

    def _auth_data_prefix(
        self, rp_id_hash: bytes | None, flags_override: int | None, flags: int, counter: int
    ) -> bytes:
        """rpIdHash || flags || signCount (WebAuthn L3 §6.1)."""
        rp_id_hash = rp_id_hash or hashlib.sha256(self.rp_id.encode()).digest()
        flags = flags if flags_override is None else flags_override
        return rp_id_hash + bytes([flags]) + counter.to_bytes(4, "big")

    def _client_data(
        self, client_type: str, options: dict, challenge: bytes | None, origin: str | None
    ) -> bytes:
        """CollectedClientData JSON (WebAuthn L3 §5.8.1)."""
        return json.dumps(
            {
                "type": client_type,
                "challenge": b64url(challenge) if challenge is not None else options["challenge"],
                "origin": origin or self.origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()

    def _att_stmt(
        self, credential_key: ec.EllipticCurvePrivateKey, auth_data: bytes, client_data: bytes
    ) -> dict:
        """The attestation statement (WebAuthn L3 §8.2 packed; §8.7 none)."""
        signed = auth_data + hashlib.sha256(client_data).digest()
        if self.attestation == "none":
            return {}
        if self.attestation == "packed-self":
            return {"alg": -7, "sig": sign_es256(credential_key, signed)}
        return {
            "alg": -7,
            "sig": sign_es256(self.attestation_key, signed),
            "x5c": list(self.attestation_chain),
        }
