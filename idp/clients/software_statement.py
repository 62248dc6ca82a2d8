"""Software statements from a trust authority (RFC 7591 §2.3, §3.1.1; docs/rp-integration.md).

A trust authority (a federation operator, a sector regulator) vouches for an RP by signing
a JWT that carries ``iss``, ``iat``, the RP's ``rp_category`` and any client metadata.
The IdP trusts the keys in the JWKS file ``IDP_TRUST_AUTHORITY_JWKS`` and nothing else.
RFC 7591 §3.1.1: the statement's values take precedence over the same members in the plain
JSON body, so an RP cannot talk itself into a category (or a redirect URI) the authority
did not sign.

Errors (RFC 7591 §3.2.2): a statement that is malformed, unsigned, signed by an unknown key,
tampered with, expired, not yet valid or missing a required claim is
``invalid_software_statement``; one presented to an IdP that trusts no authority at all is
``unapproved_software_statement``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from idp.errors import ProtocolError
from idp.policy import CATEGORIES

ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]
# JWT claims about the statement itself (RFC 7519 §4.1), not client metadata.
STATEMENT_CLAIMS = frozenset({"iss", "iat", "exp", "nbf", "jti", "aud", "sub"})
LEEWAY = 60
MAX_LENGTH = 16_384


class InvalidSoftwareStatement(ProtocolError):
    """RFC 7591 §3.2.2: the software statement presented is invalid."""

    error = "invalid_software_statement"


class UnapprovedSoftwareStatement(ProtocolError):
    """RFC 7591 §3.2.2: the software statement is not approved for use by this server."""

    error = "unapproved_software_statement"


class TrustAuthorityError(ValueError):
    """An ``IDP_TRUST_AUTHORITY_JWKS`` file the server refuses to start with."""


def load_authority_keys(path: Path | None) -> KeySet | None:
    """The authority's public keys, read once at start; a broken file stops the server
    (fail closed: a half-read key set would accept or refuse the wrong RPs)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = data["keys"]
        if not isinstance(keys, list) or not keys:
            raise ValueError("no keys")
        if any(not isinstance(k, dict) or "d" in k or k.get("kty") == "oct" for k in keys):
            raise ValueError("it must hold public keys only")
        return KeySet.import_key_set(data)
    except OSError as exc:
        raise TrustAuthorityError(f"IDP_TRUST_AUTHORITY_JWKS {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, JoseError) as exc:
        raise TrustAuthorityError(f"IDP_TRUST_AUTHORITY_JWKS {path}: not a JWK Set of public keys ({exc})") from None


def verify(statement: Any, keys: KeySet | None, *, issuer: str) -> dict[str, Any]:
    """The statement's client metadata (JWT claims about the statement removed), or an error."""
    if keys is None:
        raise UnapprovedSoftwareStatement("this server trusts no software statement authority")
    if not isinstance(statement, str) or not statement or len(statement) > MAX_LENGTH:
        raise InvalidSoftwareStatement("software_statement must be a signed JWT (RFC 7591 §2.3)")
    try:
        token = jwt.decode(statement, keys, algorithms=ALGORITHMS)
        JWTClaimsRegistry(leeway=LEEWAY, iss={"essential": True}, iat={"essential": True},
                          rp_category={"essential": True, "values": list(CATEGORIES)}).validate(token.claims)
    except (JoseError, ValueError, TypeError) as exc:
        reason = getattr(exc, "description", None) or getattr(exc, "error", None) or "malformed"
        raise InvalidSoftwareStatement(f"software_statement refused: {reason}") from None
    claims = token.claims
    if not isinstance(claims.get("iat"), int) or claims["iat"] > time.time() + LEEWAY:
        raise InvalidSoftwareStatement("software_statement refused: iat is in the future")
    audience = claims.get("aud")
    if audience is not None and issuer not in ([audience] if isinstance(audience, str) else audience):
        raise InvalidSoftwareStatement("software_statement refused: it is meant for another server (aud)")
    return {key: value for key, value in claims.items() if key not in STATEMENT_CLAIMS}


def sign(claims: Mapping[str, Any], private_jwk: Mapping[str, Any]) -> str:
    """A statement signed with the authority's private key (ES256 for P-256, EdDSA for
    Ed25519, RS256 for RSA); ``kid`` is the key's, else its RFC 7638 thumbprint."""
    kty = private_jwk.get("kty")
    key: ECKey | RSAKey | OKPKey
    if kty == "EC":
        key, alg = ECKey.import_key(dict(private_jwk)), "ES256"
    elif kty == "RSA":
        key, alg = RSAKey.import_key(dict(private_jwk)), "RS256"
    elif kty == "OKP":
        key, alg = OKPKey.import_key(dict(private_jwk)), "EdDSA"
    else:
        raise ValueError("the authority key must be an EC, RSA or OKP private JWK")
    if not key.is_private:
        raise ValueError("the authority key file holds no private key")
    header = {"alg": alg, "typ": "JWT", "kid": private_jwk.get("kid") or key.thumbprint()}
    return jwt.encode(header, dict(claims), key, algorithms=[alg])
