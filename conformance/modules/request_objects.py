"""Request objects (OIDC Core §6) in the Basic and Dynamic plans, plus local extensions.

As the suite builds them (AbstractBuildRequestObjectRedirectToAuthorizationEndpoint): the
object carries every authorization parameter; the query repeats ``response_type``,
``client_id``, ``scope`` and ``redirect_uri`` (required by OAuth 2.0) plus any value
that differs from the object's. ``request_uri`` values are registered with a fragment
(CreateRandomRequestUriWithFragment) and served by the RP host.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

from jwcrypto.jwk import JWK

from conformance import checks
from conformance.client import AuthRequest, Browser, Client
from conformance.framework import TestRun, module
from conformance.modules.common import (
    BASIC,
    BASIC_VARIANT,
    DYNAMIC,
    DYNAMIC_VARIANT,
    EXTRA,
    protected_resource,
    register,
    tokens_for,
)

REQUIRED_DUPLICATES = ("response_type", "client_id", "scope", "redirect_uri")


def request_uri_slot(run: TestRun) -> tuple[str, str]:
    """(path on the RP host, request_uri with a fragment) for one request object."""
    path = f"/requesturi/{secrets.token_urlsafe(48)}"
    fragment = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=").decode()
    return path, f"{run.env.rp_host.url(path)}#{fragment}"


def object_url(run: TestRun, client: Client, request: AuthRequest, *, alg: str = "none", key: JWK | None = None,
               by_reference: tuple[str, str] | None = None, outer: dict[str, str] | None = None) -> str:
    """The authorization URL carrying ``request`` (by value) or ``request_uri`` (by reference)."""
    claims: dict[str, Any] = dict(request.params)
    if alg != "none":
        claims.update(aud=run.env.issuer, iss=client.client_id)  # AddAudToRequestObject, AddIssToRequestObject
    token = client.request_object(claims, alg=alg, key=key)
    query = {k: v for k, v in request.params.items() if k in REQUIRED_DUPLICATES}
    query.update(outer or {})
    if by_reference is None:
        query["request"] = token
    else:
        path, uri = by_reference
        run.env.rp_host.put(path, token, content_type="application/oauth-authz-req+jwt")
        query["request_uri"] = uri
    return f"{request.endpoint}?{urlencode(sorted(query.items()))}"


def _complete(run: TestRun, client: Client, browser: Browser, request: AuthRequest, url: str, *,
              unsupported: str | None = None) -> None:
    landing = browser.go(url)
    params = checks.callback(run, landing, request.state, run.env.issuer)
    if unsupported and params.get("error") == unsupported:
        run.warn(f"{unsupported}: the official suite skips this module (request objects not supported)")
        return
    checks.success(run, params)
    tokens = tokens_for(run, client, request, params)
    protected_resource(run, client, tokens)


def _discovery_says(run: TestRun, member: str, *, warning: bool) -> None:
    run.check(run.env.provider.get(member) is True, f"discovery does not say {member}: true", ref="OIDCD-3",
              warning=warning)


@module("oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported", plan=BASIC,
        variant="client_secret_basic, dynamic_client")
def request_uri_unsigned_supported_or_rejected(run: TestRun) -> None:
    slot = request_uri_slot(run)
    client = register(run, request_uris=[slot[1]])
    request = client.auth_request()
    _complete(run, client, Browser(run.env), request, object_url(run, client, request, by_reference=slot),
              unsupported="request_uri_not_supported")
    _discovery_says(run, "request_uri_parameter_supported", warning=True)


@module("oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported", plan=BASIC,
        variant=BASIC_VARIANT)
def unsigned_request_object(run: TestRun) -> None:
    """The object must be processed (not ignored) or refused with request_not_supported."""
    client = register(run)
    request = client.auth_request()
    _complete(run, client, Browser(run.env), request, object_url(run, client, request),
              unsupported="request_not_supported")
    _discovery_says(run, "request_parameter_supported", warning=True)


def _object_redirect_uri_wins(run: TestRun, auth: str) -> None:
    """OIDC Core §6.1: the object's redirect_uri wins over an invalid one in the query
    (the suite also accepts an invalid-redirect_uri error page)."""
    client = register(run, auth=auth)
    request = client.auth_request()
    url = object_url(run, client, request, outer={"redirect_uri": client.redirect_uri + "_invalid"})
    landing = Browser(run.env).go(url)
    if landing.url is None:
        checks.error_page(run, landing, "", ref="OIDCC-6.1")
        run.note("the OP showed an error page for the query's redirect_uri (accepted by the suite)")
        return
    params = checks.callback(run, landing, request.state, run.env.issuer)
    if params.get("error") == "request_not_supported":
        run.fail("the OP redirected to the query's redirect_uri with request_not_supported", ref="OIDCC-6.1")
    checks.success(run, params)
    tokens_for(run, client, request, params)


@module("oidcc-ensure-request-object-with-redirect-uri", plan=BASIC, variant=BASIC_VARIANT)
def object_redirect_uri_basic(run: TestRun) -> None:
    _object_redirect_uri_wins(run, "client_secret_basic")


@module("oidcc-ensure-request-object-with-redirect-uri", plan=DYNAMIC, variant=DYNAMIC_VARIANT)
def object_redirect_uri_dynamic(run: TestRun) -> None:
    _object_redirect_uri_wins(run, "private_key_jwt")


@module("oidcc-request-uri-unsigned", plan=DYNAMIC, variant=DYNAMIC_VARIANT)
def request_uri_unsigned(run: TestRun) -> None:
    """OIDC Core §15.2: request_uri is mandatory for dynamic OPs (skipped by the suite without alg none)."""
    _discovery_says(run, "request_uri_parameter_supported", warning=False)
    if "none" not in (run.env.provider.get("request_object_signing_alg_values_supported") or []):
        run.warn("'none' is not in request_object_signing_alg_values_supported: the official suite skips this")
        return
    slot = request_uri_slot(run)
    client = register(run, auth="private_key_jwt", request_uris=[slot[1]])
    request = client.auth_request()
    _complete(run, client, Browser(run.env), request, object_url(run, client, request, by_reference=slot))


@module("oidcc-request-uri-signed-rs256", plan=DYNAMIC, variant=DYNAMIC_VARIANT)
def request_uri_signed_rs256(run: TestRun) -> None:
    """OP-request_uri-Sig: an RS256 request object by reference, client registered request_object_signing_alg."""
    _discovery_says(run, "request_uri_parameter_supported", warning=False)
    run.check("RS256" in (run.env.provider.get("request_object_signing_alg_values_supported") or []),
              "request_object_signing_alg_values_supported lacks RS256", ref="OIDCD-3")
    slot = request_uri_slot(run)
    client = register(run, auth="private_key_jwt", request_uris=[slot[1]], request_object_signing_alg="RS256")
    request = client.auth_request()
    _complete(run, client, Browser(run.env), request,
              object_url(run, client, request, alg="RS256", by_reference=slot))


def _signed_by_value(run: TestRun, alg: str, key: JWK) -> None:
    client = register(run, auth="private_key_jwt", key=key, request_object_signing_alg=alg)
    request = client.auth_request()
    _complete(run, client, Browser(run.env), request, object_url(run, client, request, alg=alg, key=key))


@module("jp-request-object-signed-es256", plan=EXTRA, official=False)
def request_object_es256(run: TestRun) -> None:
    """Advertised ES256 request objects work (by value, client key from jwks)."""
    _signed_by_value(run, "ES256", JWK.generate(kty="EC", crv="P-256", kid=secrets.token_urlsafe(8), alg="ES256"))


@module("jp-request-object-signed-ps256", plan=EXTRA, official=False)
def request_object_ps256(run: TestRun) -> None:
    """Advertised PS256 request objects work (by value)."""
    _signed_by_value(run, "PS256", JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(8), alg="PS256"))


@module("jp-request-object-refused", plan=EXTRA, official=False)
def request_object_refused(run: TestRun) -> None:
    """OIDC Core §6.3.2 / Registration §2: a tampered object, the wrong alg and an
    unregistered request_uri are refused by redirect with the right error."""
    slot = request_uri_slot(run)
    client = register(run, auth="private_key_jwt", request_uris=[slot[1]], request_object_signing_alg="RS256")
    browser = Browser(run.env)
    cases: list[tuple[str, str, AuthRequest]] = []
    request = client.auth_request()
    signed = object_url(run, client, request, alg="RS256")
    head, _, tail = signed.partition("request=")
    token, _, rest = tail.partition("&")
    parts = token.split(".")
    parts[2] = parts[2][::-1]
    cases.append(("invalid_request_object", head + "request=" + ".".join(parts) + ("&" + rest if rest else ""), request))
    request = client.auth_request()
    cases.append(("invalid_request_object", object_url(run, client, request), request))  # alg none, RS256 registered
    request = client.auth_request()
    stray = (f"/requesturi/{secrets.token_urlsafe(16)}", run.env.rp_host.url("/requesturi/unregistered"))
    cases.append(("invalid_request_uri", object_url(run, client, request, alg="RS256", by_reference=stray,
                                                    outer={"state": request.state}), request))
    for expected, url, req in cases:
        params = checks.callback(run, browser.go(url), req.state, run.env.issuer)
        checks.error_response(run, params, (expected,))
