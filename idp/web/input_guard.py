"""Bounds on raw request input, checked once before any view.

Each check turns a malformed input that would otherwise fail deep inside a library
(and become a 5xx) into a clear 4xx in the endpoint's own format:

- NUL characters: no protocol value may contain U+0000 and PostgreSQL cannot store it
  in text or JSON.
- JSON nesting and size (``idp.bounded_json``): JSON bodies, JSON-valued parameters such
  as ``claims`` (OIDC Core §5.5), and the header and payload of every JWT-shaped
  parameter (``client_assertion``, ``request``, ``id_token_hint``, ``logout_token``, …)
  and of a ``DPoP`` header, before authlib or joserfc parse them.
- ``Authorization: Basic`` credentials that are not base64 of UTF-8 ``id:secret``
  (RFC 7617 §2, RFC 6749 §2.3.1): ``401 invalid_client``, as for wrong credentials.

Errors at a browser page (a GET of ``PAGE_PATHS``) render the error page; everywhere
else they are JSON.
"""

from __future__ import annotations

import base64
import binascii
from flask import Flask, request

from idp import bounded_json
from idp.errors import InvalidRequest, ProtocolError, UnsafeAuthorizationRequest

PAGE_PATHS = frozenset({"/", "/authorize", "/login", "/login/wallet", "/consent", "/logout", "/account"})
PAGE_PREFIXES = ("/account/devices/", "/account/consents/", "/demo")
NUL_MESSAGE = "the request contains a NUL character"
JWT_HEADERS = ("DPoP",)


class InvalidClient(ProtocolError):
    """RFC 6749 §5.2: client authentication failed; 401 with a ``WWW-Authenticate`` challenge."""

    error = "invalid_client"
    status = 401


def is_page() -> bool:
    """A browser page: its errors are HTML, not JSON."""
    return request.method == "GET" and (request.path in PAGE_PATHS or request.path.startswith(PAGE_PREFIXES))


def _values() -> list[tuple[str, str]]:
    """The query's and the form's parameters, parsed once for all the checks."""
    values = list(request.args.items(multi=True))
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        values.extend(request.form.items(multi=True))
    return values


def _has_nul(values: list[tuple[str, str]]) -> bool:
    if request.view_args and any("\x00" in str(v) for v in request.view_args.values()):
        return True
    if any("\x00" in key or "\x00" in value for key, value in values):
        return True
    if request.is_json:
        body = request.get_data(cache=True)
        return b"\x00" in body or b"\\u0000" in body
    return False


def _check_json_bounds(values: list[tuple[str, str]]) -> None:
    """Raise JsonBoundsError for an over-deep or over-large JSON anywhere in the request."""
    if request.is_json:
        bounded_json.check(request.get_data(cache=True))
    for _key, value in values:
        if bounded_json.looks_like_jwt(value):
            bounded_json.check_jwt(value)
        elif "[" in value or "{" in value:
            bounded_json.check(value)
    for name in JWT_HEADERS:
        value = request.headers.get(name)
        if value:
            bounded_json.check_jwt(value)


def _check_basic_credentials() -> None:
    """RFC 7617 §2: ``Basic`` is base64 of ``user-id ":" password``, UTF-8 here (§2.1)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return
    try:
        decoded = base64.b64decode(credentials.strip().encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        decoded = ""
    if ":" not in decoded or "\x00" in decoded:
        raise InvalidClient("the Basic credentials are not base64 of UTF-8 client_id:client_secret",
                            headers={"WWW-Authenticate": 'Basic realm="idp"'})


def init_app(app: Flask) -> None:
    @app.before_request
    def _guard_input() -> None:
        values = _values()
        if _has_nul(values):
            if is_page():
                raise UnsafeAuthorizationRequest(NUL_MESSAGE)
            raise InvalidRequest(NUL_MESSAGE)
        try:
            _check_json_bounds(values)
        except bounded_json.JsonBoundsError as exc:
            if is_page():
                raise UnsafeAuthorizationRequest(str(exc)) from None
            raise InvalidRequest(str(exc)) from None
        _check_basic_credentials()
