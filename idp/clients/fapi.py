"""FAPI 2.0 Security Profile rules for clients whose category demands them (``financial``).

FAPI 2.0 Security Profile §5.4.1: "shall use PS256, ES256 or EdDSA (Ed25519)" for
signatures; RS256 is refused for every signature a financial client makes or receives:
ID tokens, signed UserInfo, request objects and client assertions, and at registration
(RFC 7591 §3.2.2 ``invalid_client_metadata``). ID tokens here use ES256 unless the client
registered another strong algorithm the key store signs with.

Registration metadata (RFC 9126 §6, RFC 9449 §5.2): ``require_pushed_authorization_requests``
and ``dpop_bound_access_tokens``, booleans a client of any category may set for itself; the
category policy may require both regardless.
"""

from __future__ import annotations

from typing import Any, Mapping

from idp.errors import InvalidClientMetadata

STRONG_ALGS = ("ES256", "PS256")
FAPI_CATEGORIES = frozenset({"financial"})
FINANCIAL_ID_TOKEN_ALG = "ES256"
ALG_FIELDS = ("id_token_signed_response_alg", "userinfo_signed_response_alg",
              "request_object_signing_alg", "token_endpoint_auth_signing_alg")
BOOLEAN_FIELDS = ("require_pushed_authorization_requests", "dpop_bound_access_tokens")


def applies(category: str) -> bool:
    return category in FAPI_CATEGORIES


def allowed_algs(category: str, algs: tuple[str, ...]) -> tuple[str, ...]:
    """The algorithms of ``algs`` a client of ``category`` may use."""
    return tuple(a for a in algs if a in STRONG_ALGS) if applies(category) else algs


def check_metadata(category: str, body: Mapping[str, Any], meta: dict[str, Any]) -> None:
    """Registration: strong algorithms only for FAPI categories; the two boolean fields."""
    for key in BOOLEAN_FIELDS:
        if key in body:
            if not isinstance(body[key], bool):
                raise InvalidClientMetadata(f"{key} must be a boolean")
            meta[key] = body[key]
    if not applies(category):
        return
    for key in ALG_FIELDS:
        if key in body and body[key] not in STRONG_ALGS:
            raise InvalidClientMetadata(
                f"{key} must be {' or '.join(STRONG_ALGS)} for {category} clients (FAPI 2.0 §5.4.1)")
    keys = body.get("jwks", {}).get("keys", []) if isinstance(body.get("jwks"), dict) else []
    for key in keys:
        if isinstance(key, dict) and "alg" in key and key["alg"] not in STRONG_ALGS:
            raise InvalidClientMetadata(
                f"jwks: a key for {key['alg']} cannot sign for {category} clients (FAPI 2.0 §5.4.1)")
