"""OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414 §2): advertise only what works.

Every value here is exercised by a module of ``python -m conformance.run`` (conformance/README.md):
request objects by value and by registered reference, signed (ES256/RS256/PS256) or
unsigned (``none``, OIDC Core §6.1); RP-Initiated Logout 1.0 (``end_session_endpoint``);
Back-Channel Logout 1.0 with per-client ``sid`` (``backchannel_logout_session_supported``);
RFC 7592 client read and delete at ``registration_client_uri``.
"""

from __future__ import annotations

from typing import Any

from idp.clients.registry import REQUEST_OBJECT_ALGS, SCOPES, SIGNING_ALGS, UNSIGNED_REQUEST_OBJECT
from idp.context import services
from idp.oidc import dpop, verified_claims
from idp.oidc.claims import SCOPE_CLAIMS
from idp.policy import ACR_ORDER

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def metadata() -> dict[str, Any]:
    svc = services()
    url = svc.settings.url
    claims = sorted({"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "at_hash"}
                    | set(svc.policy.all_claims)
                    | {c for names in SCOPE_CLAIMS.values() for c in names})
    identity_assurance = verified_claims.metadata() if "verified_claims" in svc.policy.all_claims else {}
    return {**identity_assurance, **{
        "issuer": svc.settings.issuer,
        "authorization_endpoint": url("/authorize"),
        "token_endpoint": url("/token"),
        "userinfo_endpoint": url("/userinfo"),
        "jwks_uri": url("/jwks"),
        "registration_endpoint": url("/register"),
        "pushed_authorization_request_endpoint": url("/par"),
        "revocation_endpoint": url("/revoke"),
        "introspection_endpoint": url("/introspect"),
        "end_session_endpoint": url("/logout"),
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        "userinfo_signing_alg_values_supported": list(SIGNING_ALGS),
        "request_object_signing_alg_values_supported": [UNSIGNED_REQUEST_OBJECT, *REQUEST_OBJECT_ALGS],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(REQUEST_OBJECT_ALGS),
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:3],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(dpop.SIGNING_ALGS),
        "claims_supported": claims,
        "claims_parameter_supported": True,
        "request_parameter_supported": True,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": True,
        "require_pushed_authorization_requests": False,
        "authorization_response_iss_parameter_supported": True,
        "acr_values_supported": list(ACR_ORDER),
        "display_values_supported": ["page", "popup", "touch"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "ui_locales_supported": ["ja", "en"],
        "claims_locales_supported": ["ja"],
        "claim_types_supported": ["normal"],
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "service_documentation": url("/"),
    }}
