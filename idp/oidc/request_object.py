"""Request objects (OpenID Connect Core 1.0 §6): ``request`` by value, ``request_uri`` by reference.

Rules, in order:
1. ``request`` and ``request_uri`` together are ``invalid_request`` (§6.1, §6.2).
2. A ``request_uri`` must be registered in the client's ``request_uris`` (compared without
   the fragment, which §6.2 reserves for a content hash; discovery says
   ``require_request_uri_registration``), is at most 512 characters, and is fetched through
   the outbound-fetch guard (public https host, total deadline, size cap, no redirects;
   ``invalid_request_uri`` otherwise). Only registered URLs are ever fetched, so the
   endpoint cannot be used to reach arbitrary hosts. The answer is cached by the full URI
   as its ``Cache-Control`` allows: §6.2 lets the OP cache it and names a changed fragment
   (the content's hash) as the signal that a cached copy is stale.
3. The object is a JWS signed with ES256, RS256 or PS256 by a key from the client's
   ``jwks`` / ``jwks_uri`` (a new ``kid`` refetches the ``jwks_uri``, OIDC Core §10.1.1), or
   unsigned (``alg: none``, §6.1 allows it). A client that registered
   ``request_object_signing_alg`` must use exactly that algorithm (Registration 1.0 §2).
   Encrypted objects are not supported. ``iss``, when present, is the client; ``aud``,
   when present, names the issuer; ``exp`` and ``nbf`` are honoured.
4. The object's members win over the query parameters (§6.3.3: "parameters in the
   Request Object take precedence"); ``client_id`` and ``response_type`` must agree with
   the query when both carry them (§6.1). Failures are ``invalid_request_object``.
5. A FAPI-category client (``financial``) signs with ES256 or PS256 only: RS256 and
   unsigned objects are refused (FAPI 2.0 Security Profile §5.4.1).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Mapping
from urllib.parse import urldefrag

from joserfc import jwt
from joserfc.errors import JoseError

from idp import bounded_json
from idp.clients import fapi
from idp.clients.fetch import FetchError, fetch_cached
from idp.clients.keys import ClientKeyError, client_key_resolver
from idp.clients.registry import REQUEST_OBJECT_ALGS, RegisteredClient
from idp.context import services

MAX_REQUEST_OBJECT = 64 * 1024
MAX_REQUEST_URI = 512
LEEWAY_SECONDS = 60
JWT_ONLY_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "jti", "request", "request_uri"})
JWT_MEDIA_TYPES = "application/oauth-authz-req+jwt, application/jwt;q=0.9, */*;q=0.1"


class RequestObjectError(Exception):
    """A redirectable authorization error about the request object (OIDC Core §6.3.2).

    ``state`` is the object's ``state`` read without verification, echoed in the error
    response when the query has none (RFC 6749 §4.1.2.1): a query ``state`` is no more
    authenticated than an unverified object's, and the RP needs it to match the error.
    """

    def __init__(self, error: str, description: str, state: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.state = state


def carries_request_object(params: Mapping[str, Any]) -> bool:
    return "request" in params or "request_uri" in params


def resolve(params: Mapping[str, Any], client: RegisteredClient) -> dict[str, Any]:
    """The authorization parameters with the request object merged in (object wins)."""
    if "request" in params and "request_uri" in params:
        raise RequestObjectError("invalid_request", "send request or request_uri, not both")
    if "request_uri" in params:
        text = fetch_request_uri(params["request_uri"], client)
    else:
        text = params["request"]
    try:
        claims = decode(text, client)
    except RequestObjectError as exc:
        exc.state = exc.state or unverified_state(text)
        raise
    for key in ("client_id", "response_type"):
        if key in claims and key in params and str(claims[key]) != params[key]:
            raise RequestObjectError("invalid_request_object",
                                     f"{key} in the request object differs from the request")
    merged = {k: v for k, v in params.items() if k not in ("request", "request_uri")}
    members = as_parameters(claims)
    if any("\x00" in key or "\x00" in value for key, value in members.items()):
        # The request's input guard never saw these values (PROTOCOL §7.6: no NUL anywhere).
        raise RequestObjectError("invalid_request_object", "the request object contains a NUL character",
                                 unverified_state(text))
    merged.update(members)
    return merged


def fetch_request_uri(request_uri: Any, client: RegisteredClient) -> str:
    """OIDC Core §6.2: fetch a registered ``request_uri``."""
    if not isinstance(request_uri, str) or not request_uri or len(request_uri) > MAX_REQUEST_URI:
        raise RequestObjectError("invalid_request_uri", "request_uri must be a URL of at most 512 characters")
    location, _fragment = urldefrag(request_uri)
    registered = {urldefrag(uri)[0] for uri in client.metadata.get("request_uris", [])}
    if location not in registered:
        raise RequestObjectError("invalid_request_uri", "request_uri is not registered for this client")
    try:
        body = fetch_cached(location, allow_http_loopback=services().settings.allow_http_loopback,
                            accept=JWT_MEDIA_TYPES, cache_key=request_uri)
    except FetchError:
        raise RequestObjectError("invalid_request_uri", "request_uri could not be fetched") from None
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise RequestObjectError("invalid_request_uri", "request_uri did not return a JWT") from None


def decode(text: Any, client: RegisteredClient) -> dict[str, Any]:
    """Verify (or, for ``alg: none``, parse) the request object; return its claims."""
    if not isinstance(text, str) or not text or len(text) > MAX_REQUEST_OBJECT:
        raise RequestObjectError("invalid_request_object", "the request object is missing or too large")
    parts = text.split(".")
    if len(parts) == 5:
        raise RequestObjectError("invalid_request_object", "encrypted request objects are not supported")
    if len(parts) != 3:
        raise RequestObjectError("invalid_request_object", "the request object is not a compact JWT")
    try:
        bounded_json.check_jwt(text)  # a fetched object never passed the request's input guard
    except bounded_json.JsonBoundsError as exc:
        raise RequestObjectError("invalid_request_object", str(exc)) from None
    header = _json_part(parts[0], "header")
    alg = header.get("alg")
    registered = client.metadata.get("request_object_signing_alg")
    if registered and alg != registered:
        raise RequestObjectError("invalid_request_object",
                                 f"this client registered request_object_signing_alg {registered}")
    if fapi.applies(client.category) and alg not in fapi.STRONG_ALGS:
        raise RequestObjectError("invalid_request_object",
                                 f"{client.category} clients sign request objects with "
                                 f"{' or '.join(fapi.STRONG_ALGS)} (FAPI 2.0 §5.4.1)")
    if alg == "none":
        if parts[2]:
            raise RequestObjectError("invalid_request_object", "an unsigned request object has no signature")
        claims = _json_part(parts[1], "payload")
    elif alg in REQUEST_OBJECT_ALGS:
        claims = _verified_claims(text, alg, client)
    else:
        raise RequestObjectError("invalid_request_object", "unsupported request object algorithm")
    _check_claims(claims, client)
    return claims


def _verified_claims(text: str, alg: str, client: RegisteredClient) -> dict[str, Any]:
    try:
        token = jwt.decode(text, client_key_resolver(client), algorithms=[alg])
    except ClientKeyError as exc:
        raise RequestObjectError("invalid_request_object", _ascii(f"no usable client key: {exc}")) from None
    except (JoseError, ValueError, TypeError, KeyError):
        raise RequestObjectError("invalid_request_object", "the request object signature does not verify") from None
    claims = token.claims
    if not isinstance(claims, dict):
        raise RequestObjectError("invalid_request_object", "the request object payload is not a JSON object")
    return dict(claims)


def _check_claims(claims: Mapping[str, Any], client: RegisteredClient) -> None:
    issuer = services().settings.issuer
    if "iss" in claims and claims["iss"] != client.client_id:
        raise RequestObjectError("invalid_request_object", "iss of the request object must be the client_id")
    if "aud" in claims:
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if issuer not in audiences:
            raise RequestObjectError("invalid_request_object", "aud of the request object must name the issuer")
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None and (not _is_number(exp) or exp + LEEWAY_SECONDS < now):
        raise RequestObjectError("invalid_request_object", "the request object has expired")
    if nbf is not None and (not _is_number(nbf) or nbf - LEEWAY_SECONDS > now):
        raise RequestObjectError("invalid_request_object", "the request object is not valid yet")


def as_parameters(claims: Mapping[str, Any]) -> dict[str, str]:
    """Request object members as authorization parameters: JSON values become strings
    (``claims`` stays JSON, ``max_age`` a decimal), JWT-only members are dropped."""
    params: dict[str, str] = {}
    for key, value in claims.items():
        if key in JWT_ONLY_CLAIMS or value is None:
            continue
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, int):
            params[key] = str(value)
        elif isinstance(value, float):
            params[key] = str(int(value)) if value.is_integer() else str(value)
        else:
            params[key] = json.dumps(value, ensure_ascii=False)
    return params


def unverified_state(text: Any) -> str | None:
    """The ``state`` member of a compact JWS/JWT payload, unverified (for error responses only)."""
    try:
        value = _json_part(text.split(".")[1], "payload")
    except (RequestObjectError, AttributeError, IndexError):
        return None
    state = value.get("state")
    return state if isinstance(state, str) and len(state) <= 4096 else None


def _json_part(segment: str, what: str) -> dict[str, Any]:
    try:
        value = bounded_json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        raise RequestObjectError("invalid_request_object", f"the request object {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise RequestObjectError("invalid_request_object", f"the request object {what} is not a JSON object")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").replace('"', "'").replace("\\", "/")
