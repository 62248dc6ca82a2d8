"""DPoP proofs (RFC 9449): sender-constrained tokens for the token endpoint, PAR and UserInfo.

A proof is a JWT the client signs with a key it keeps; tokens are bound to the key's
JWK SHA-256 thumbprint (RFC 7638, ``jkt``), so a stolen token is useless without the key.
joserfc parses the key, computes the thumbprint and verifies the signature; this module
only applies the checks of RFC 9449 §4.3, in its order:

1. exactly one ``DPoP`` header, a compact JWS;
2. header ``typ`` is ``dpop+jwt`` and ``alg`` an asymmetric algorithm we support (§4.2);
3. header ``jwk`` is a public key (never a private one) and the signature verifies with it;
4. ``htm`` is the request method and ``htu`` the endpoint URL, compared without query and
   fragment (§4.3 item 9) against the URL derived from the issuer, never the Host header
   (a proxy or a forged Host must not change what the proof is checked against);
5. ``iat`` within the acceptance window (§11.1);
6. ``nonce`` a current server nonce when the server demands one (§8, §9);
7. ``ath`` the base64url SHA-256 of the access token at a resource request (§4.3 item 11);
8. ``jti`` seen once within the window, through the shared single-use store, so 20
   workers cannot all accept one proof (§11.1).

Server nonces (§8.1) are stateless: an HMAC of a time window under the server secret,
so every worker and every instance sharing the deployment's secret issues and accepts the
same values, and they rotate every :data:`NONCE_WINDOW_SECONDS`.
"""

from __future__ import annotations

import base64
import functools
import json
import hashlib
import hmac as std_hmac
import struct
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

PROOF_TYPE = "dpop+jwt"
# Ed25519 is RFC 9864's fully specified name for EdDSA over Ed25519 (joserfc deprecates "EdDSA").
SIGNING_ALGS = ("ES256", "PS256", "Ed25519")
PROOF_MAX_AGE_SECONDS = 60
CLOCK_SKEW_SECONDS = 10
NONCE_WINDOW_SECONDS = 300
MAX_PROOF_LENGTH = 8192
JKT_LENGTH = 43  # base64url of a SHA-256 digest, no padding
REQUIRED_CLAIMS = ("jti", "htm", "htu", "iat")


class ProofRegistry(jws.JWSRegistry):
    """joserfc's JWS rules with room for the ``jwk`` header of an RSA key (the default 512-byte
    header cap would refuse every PS256 proof); still bounded by :data:`MAX_PROOF_LENGTH`."""

    max_header_length = 4096


class DPoPError(Exception):
    """A refused proof. ``error`` is ``invalid_dpop_proof`` or ``use_dpop_nonce`` (RFC 9449 §12.2)."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Proof:
    """A verified proof: the key's RFC 7638 thumbprint and the proof's claims."""

    jkt: str
    claims: Mapping[str, Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII octets."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def is_jkt(value: Any) -> bool:
    """A syntactically valid ``dpop_jkt`` (RFC 9449 §10): a base64url SHA-256 thumbprint."""
    if not isinstance(value, str) or len(value) != JKT_LENGTH:
        return False
    return all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in value)


def normalise_url(url: str) -> str:
    """RFC 9449 §4.3 item 9: scheme and host case-insensitive, default port dropped, no query
    or fragment (RFC 3986 §6.2.2, §6.2.3)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


# ---- server nonces (§8, §9) ----

@functools.lru_cache(maxsize=16)
def _nonce_mac(secret: bytes, window: int) -> bytes:
    """One MAC per window (a window's nonce goes on every token and userinfo answer)."""
    mac = crypto_hmac.HMAC(secret, hashes.SHA256())
    mac.update(b"dpop-nonce\x00" + struct.pack(">Q", window))
    return mac.finalize()[:18]


@functools.lru_cache(maxsize=4)
def _nonce_secret(server_secret: str) -> bytes:
    return hashlib.sha256(b"idp dpop nonce key\x00" + server_secret.encode("utf-8")).digest()


def current_nonce(server_secret: str, *, now: float | None = None) -> str:
    """The nonce of the current window: the window number and its MAC (no state to share)."""
    window = int((time.time() if now is None else now) // NONCE_WINDOW_SECONDS)
    return b64url(struct.pack(">Q", window) + _nonce_mac(_nonce_secret(server_secret), window))


def nonce_is_valid(nonce: Any, server_secret: str, *, now: float | None = None) -> bool:
    """True for the current window's nonce and the previous one (so a rotation mid-flow is
    not a failure); anything else is refused."""
    if not isinstance(nonce, str) or len(nonce) > 64:
        return False
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (ValueError, TypeError):
        return False
    if len(raw) != 26:
        return False
    window = struct.unpack(">Q", raw[:8])[0]
    current = int((time.time() if now is None else now) // NONCE_WINDOW_SECONDS)
    if window not in (current, current - 1):
        return False
    return std_hmac.compare_digest(raw[8:], _nonce_mac(_nonce_secret(server_secret), window))


# ---- the proof ----

def verify_proof(
    headers: Sequence[str],
    *,
    method: str,
    url: str,
    server_secret: str,
    access_token: str | None = None,
    require_nonce: bool = False,
    now: float | None = None,
) -> Proof:
    """The checks of RFC 9449 §4.3 but ``jti`` single use (:func:`proof_of_request` adds it):
    returns the verified proof or raises :class:`DPoPError`."""
    if len(headers) != 1:
        raise DPoPError("exactly one DPoP header is required (RFC 9449 §4.3)")
    text = headers[0].strip()
    if not text or len(text) > MAX_PROOF_LENGTH or text.count(".") != 2:
        raise DPoPError("the DPoP proof is not a compact JWS")
    try:
        header = jws.extract_compact(text.encode("ascii"), None, ProofRegistry()).protected
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise DPoPError("the DPoP proof is not a well-formed JWT") from None
    if header.get("typ") != PROOF_TYPE:
        raise DPoPError("the DPoP proof typ must be dpop+jwt")
    alg = header.get("alg")
    if alg not in SIGNING_ALGS:
        raise DPoPError(f"the DPoP proof alg must be one of {', '.join(SIGNING_ALGS)}")
    key = _public_key(header.get("jwk"))
    try:
        verified = jws.deserialize_compact(text, key, registry=ProofRegistry(algorithms=[alg]))
    except (JoseError, ValueError, TypeError):
        raise DPoPError("the DPoP proof signature does not verify") from None
    claims = _claims(verified.payload)
    _check_request(claims, method=method, url=url)
    _check_time(claims, time.time() if now is None else now)
    _check_nonce(claims, server_secret, require_nonce, now)
    if access_token is not None and not std_hmac.compare_digest(
            str(claims.get("ath", "")), access_token_hash(access_token)):
        raise DPoPError("the DPoP proof ath does not match the access token")
    return Proof(jkt=key.thumbprint(), claims=claims)


def _public_key(jwk: Any) -> Any:
    """§4.3 item 7: the ``jwk`` header is a public key; a private one is refused outright."""
    if not isinstance(jwk, dict):
        raise DPoPError("the DPoP proof header must carry the public key as jwk")
    if any(member in jwk for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise DPoPError("the DPoP proof jwk must be a public key")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise DPoPError("the DPoP proof jwk is not a usable key") from None
    if key.key_type not in ("EC", "RSA", "OKP") or key.is_private:
        raise DPoPError("the DPoP proof jwk must be an asymmetric public key")
    return key


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise DPoPError("the DPoP proof payload is not JSON") from None
    if not isinstance(claims, dict):
        raise DPoPError("the DPoP proof payload is not a JSON object")
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise DPoPError(f"the DPoP proof lacks {missing[0]}")
    if not isinstance(claims["jti"], str) or not 1 <= len(claims["jti"]) <= 256:
        raise DPoPError("the DPoP proof jti must be a string of at most 256 characters")
    return claims


def _check_request(claims: Mapping[str, Any], *, method: str, url: str) -> None:
    if claims.get("htm") != method:
        raise DPoPError("the DPoP proof htm does not match the request method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalise_url(htu) != normalise_url(url):
        raise DPoPError("the DPoP proof htu does not match the endpoint URL")


def _check_time(claims: Mapping[str, Any], now: float) -> None:
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or isinstance(iat, bool):
        raise DPoPError("the DPoP proof iat must be a number")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise DPoPError("the DPoP proof iat is in the future")
    if iat < now - PROOF_MAX_AGE_SECONDS:
        raise DPoPError("the DPoP proof is too old")


def _check_nonce(claims: Mapping[str, Any], server_secret: str, required: bool, now: float | None) -> None:
    """§8.2: a missing (when demanded), unknown or stale nonce is ``use_dpop_nonce``."""
    if "nonce" not in claims:
        if required:
            raise DPoPError("the server requires a DPoP nonce", error="use_dpop_nonce")
        return
    if not nonce_is_valid(claims["nonce"], server_secret, now=now):
        raise DPoPError("the DPoP nonce is unknown or expired", error="use_dpop_nonce")


def replay_key(proof: Proof) -> str:
    """The single-use key of a proof: its key and ``jti`` (§11.1), short enough to index."""
    digest = hashlib.sha256(f"{proof.jkt}\x00{proof.claims['jti']}".encode("utf-8")).hexdigest()
    return f"dpop:{digest}"


# ---- in a request ----

def proof_of_request(path: str, *, access_token: str | None = None, require_nonce: bool = False) -> Proof | None:
    """The verified, first-seen proof of the current request to ``path``, or None without one.

    ``htu`` is compared with the issuer's URL for ``path`` (never the Host header); the
    ``jti`` goes through the shared single-use store, so a replay on any worker or instance
    sharing the database is refused (§11.1).
    """
    from flask import request

    from idp.context import services
    from idp.oidc.replay import remember_once

    headers = request.headers.getlist("DPoP")
    if not headers:
        return None
    svc = services()
    proof = verify_proof(headers, method=request.method, url=svc.settings.url(path),
                         server_secret=svc.secret_key, access_token=access_token, require_nonce=require_nonce)
    if not remember_once(replay_key(proof), PROOF_MAX_AGE_SECONDS + 2 * CLOCK_SKEW_SECONDS):
        raise DPoPError("the DPoP proof was already used (jti)")
    return proof


def fresh_nonce() -> str:
    """The nonce to send in ``DPoP-Nonce`` now (§8.2: any response may carry a new one)."""
    from idp.context import services

    return current_nonce(services().secret_key)
