"""oidcc-config-certification-test-plan: oidcc-discovery-endpoint-verification (static client).

The Dynamic plan runs the same module with ``dynamic_client``, which additionally demands
``response_types_supported`` ⊇ {code, id_token, token id_token} and the ``implicit``
grant (OIDCCCheckDiscEndpointResponseTypesSupportedDynamic, from OIDC Core §15.2). This OP
implements the code flow only, by design (RFC 9700 §2.1.2), so that variant is not run
here; conformance/README.md explains it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from conformance import checks
from conformance.framework import TestRun, module
from conformance.modules.common import CONFIG, LOGOUT, BACKCHANNEL

DISCOVERY_PATH = "/.well-known/openid-configuration"
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "registration_endpoint",
             "end_session_endpoint", "revocation_endpoint", "introspection_endpoint",
             "pushed_authorization_request_endpoint")
BOOLEANS = ("claims_parameter_supported", "request_parameter_supported", "request_uri_parameter_supported",
            "require_request_uri_registration", "authorization_response_iss_parameter_supported",
            "backchannel_logout_supported", "backchannel_logout_session_supported", "frontchannel_logout_supported",
            "require_pushed_authorization_requests",
            "verified_claims_supported")  # OpenID Connect for Identity Assurance 1.0 §7: a boolean


def fetch(run: TestRun) -> dict[str, Any]:
    """GetDynamicServerConfiguration, EnsureDiscoveryEndpointResponseStatusCodeIs200,
    CheckDiscoveryEndpointReturnedJsonContentType (OIDCD-4)."""
    url = run.env.issuer.rstrip("/") + DISCOVERY_PATH
    response = requests.get(url, timeout=20)
    run.require(response.status_code == 200, f"discovery answered HTTP {response.status_code}", ref="OIDCD-4")
    run.check(response.headers.get("Content-Type", "").startswith("application/json"), "discovery is not JSON",
              ref="OIDCD-4")
    document = response.json()
    run.require(isinstance(document, dict), "discovery is not a JSON object", ref="OIDCD-4")
    return document


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


@module("oidcc-discovery-endpoint-verification", plan=CONFIG, variant="static_client")
def discovery_endpoint_verification(run: TestRun) -> None:
    doc = fetch(run)
    issuer = run.env.issuer
    # CheckDiscEndpointIssuer (OIDCD-4.3), CheckDiscEndpointIssuerIsValidUrl (RFC 8414 §2)
    run.check(doc.get("issuer") == issuer, f"issuer {doc.get('issuer')!r} is not the URL discovery was read from",
              ref="OIDCD-4.3")
    parts = urlsplit(str(doc.get("issuer")))
    run.check(not parts.query and not parts.fragment and checks.secure_url(doc.get("issuer"), issuer),
              "issuer must be an https URL without query or fragment", ref="RFC8414-2")
    # ValidateServerMetadataAgainstSchema, CheckForUnexpectedParametersInServerMetadata (WARNING)
    for name, value in doc.items():
        if name.endswith("_supported") and name not in BOOLEANS:
            run.check(_strings(value), f"{name} is not an array of strings", ref="OIDCD-3")
    for name in BOOLEANS:
        if name in doc:
            run.check(isinstance(doc[name], bool), f"{name} is not a boolean", ref="OIDCD-3")
    unknown = sorted(set(doc) - checks.KNOWN_METADATA)
    run.check(not unknown, f"metadata the suite does not know: {unknown}", ref="RFC8414-2", warning=True)
    # OIDCCCheckDiscEndpointResponseTypesSupported (code), SubjectTypesSupported, IdTokenSigningAlgValuesSupported
    run.check("code" in (doc.get("response_types_supported") or []), "response_types_supported lacks code",
              ref="OIDCC-3")
    subject_types = doc.get("subject_types_supported") or []
    run.check(_strings(subject_types) and set(subject_types) <= {"public", "pairwise"} and subject_types,
              "subject_types_supported must list public and/or pairwise", ref="OIDCD-3")
    run.check("RS256" in (doc.get("id_token_signing_alg_values_supported") or []),
              "id_token_signing_alg_values_supported lacks RS256", ref="OIDCD-3")
    run.check("none" not in (doc.get("id_token_signing_alg_values_supported") or []),
              "unsigned ID tokens are advertised", ref="OIDCC-2", warning=True)
    # CheckDiscEndpointAuthorizationEndpoint/TokenEndpoint/UserinfoEndpoint/RegistrationEndpoint, CheckJwksUri,
    # CheckDiscEndpointAllEndpointsAreHttps
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        run.check(name in doc, f"{name} missing", ref="OIDCD-3")
    for name in ENDPOINTS:
        if name in doc:
            run.check(checks.secure_url(doc[name], issuer), f"{name} {doc[name]!r} is not https", ref="OIDCD-3")
    run.check("registration_endpoint" in doc, "registration_endpoint missing (dynamic registration)", ref="OIDCD-3",
              warning=True)
    # FetchServerKeys, ValidateJwksSequence
    jwks = requests.get(doc["jwks_uri"], timeout=20)
    run.require(jwks.status_code == 200, f"jwks_uri answered HTTP {jwks.status_code}", ref="OIDCD-3")
    checks.server_jwks(run, jwks.json())
    # request objects, claims parameter (INFO in the suite) and RS256 request objects (a "should": WARNING)
    run.check("RS256" in (doc.get("request_object_signing_alg_values_supported") or ["RS256"]),
              "request_object_signing_alg_values_supported lacks RS256", ref="OIDCD-3", warning=True)
    run.check(_strings(doc.get("claims_supported")), "claims_supported missing or not an array", ref="OIDCD-3",
              warning=True)
    # OIDCCCheckDiscEndpointGrantTypesSupported, CheckDiscEndpointScopesSupportedContainsOpenId and syntax
    if "grant_types_supported" in doc:
        run.check(_strings(doc["grant_types_supported"]) and doc["grant_types_supported"],
                  "grant_types_supported must be a non-empty array", ref="OIDCD-3")
    scopes = doc.get("scopes_supported")
    if scopes is not None:
        run.check("openid" in scopes, "scopes_supported lacks openid", ref="OIDCD-3", warning=True)
        run.check(all(isinstance(s, str) and s and not set(s) & {" ", '"', "\\"} and s.isascii() for s in scopes),
                  "scopes_supported has a malformed scope token", ref="RFC6749-3.3")
    # CheckDiscEndpointLocalesSyntax, EnsureServerConfigurationCodeChallengeMethodsSupportedIsAnArray
    for name in ("ui_locales_supported", "claims_locales_supported"):
        if name in doc:
            run.check(all(isinstance(t, str) and t.replace("-", "").isalnum() for t in doc[name]),
                      f"{name} has a malformed BCP 47 tag", ref="RFC8414-2")
    if "code_challenge_methods_supported" in doc:
        run.check(_strings(doc["code_challenge_methods_supported"]),
                  "code_challenge_methods_supported is not an array", ref="RFC7636-4.3")
    run.check(doc.get("authorization_response_iss_parameter_supported") is True,
              "authorization_response_iss_parameter_supported is not true (RFC 9207)", ref="RFC9207-3", warning=True)


@module("oidcc-rp-initiated-logout-discovery-endpoint-verification", plan=LOGOUT)
def logout_discovery(run: TestRun) -> None:
    """CheckDiscEndSessionEndpoint (OIDCRIL-2.1), CheckDiscEndpointAllEndpointsAreHttps."""
    doc = fetch(run)
    run.require(doc.get("end_session_endpoint"), "end_session_endpoint missing", ref="OIDCRIL-2.1")
    run.check(checks.secure_url(doc["end_session_endpoint"], run.env.issuer), "end_session_endpoint is not https",
              ref="OIDCRIL-2.1")


@module("oidcc-backchannel-logout-discovery-endpoint-verification", plan=BACKCHANNEL)
def backchannel_discovery(run: TestRun) -> None:
    """CheckDiscBackchannelLogoutSupported, CheckDiscBackchannelLogoutSessionSupported (OIDCBCL-2.1)."""
    doc = fetch(run)
    run.check(doc.get("backchannel_logout_supported") is True, "backchannel_logout_supported is not true",
              ref="OIDCBCL-2.1")
    run.check(doc.get("backchannel_logout_session_supported") is True,
              "backchannel_logout_session_supported is not true", ref="OIDCBCL-2.1", warning=True)
    run.check(checks.secure_url(doc.get("end_session_endpoint"), run.env.issuer), "end_session_endpoint missing",
              ref="OIDCRIL-2.1")
