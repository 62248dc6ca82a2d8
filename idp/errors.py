"""All protocol errors in one place, each knowing its status and whether it may be redirected.

JSON endpoints answer ``{"error", "error_description"}`` (RFC 6749 §5.2, PROTOCOL
"Encodings"). An authorization request whose client or redirect URI cannot be trusted
must never be redirected (RFC 6749 §4.1.2.1): those errors render an HTML page instead.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException


class ProtocolError(Exception):
    """An error a client sees as ``{"error", "error_description"}`` with a 4xx status."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str, *, error: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        if error:
            self.error = error
        if status:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(ProtocolError):
    error = "invalid_request"


class NotFound(ProtocolError):
    error = "not_found"
    status = 404


class InvalidClientMetadata(ProtocolError):
    """OIDC Dynamic Client Registration 1.0 §3.3."""

    error = "invalid_client_metadata"


class InvalidRedirectUri(ProtocolError):
    """OIDC Dynamic Client Registration 1.0 §3.3."""

    error = "invalid_redirect_uri"


class AccessDenied(ProtocolError):
    error = "access_denied"
    status = 403


class Unauthorized(ProtocolError):
    error = "invalid_token"
    status = 401


class Locked(ProtocolError):
    """A credential locked after repeated failures (PROTOCOL §6): the body says until when."""

    error = "credential_locked"
    status = 423


class UnsafeAuthorizationRequest(Exception):
    """An authorization request whose client or redirect URI cannot be trusted (never redirected)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def init_app(app: Flask) -> None:
    @app.errorhandler(ProtocolError)
    def _protocol_error(exc: ProtocolError) -> Response:
        response = jsonify(exc.body())
        response.status_code = exc.status
        response.headers.update(exc.headers)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(InsecureTransportError)
    def _insecure_transport(exc: InsecureTransportError) -> Response:
        """RFC 6749 §3.1/§3.2 need TLS; plain http from a proxy the IdP was not told to trust
        (IDP_PROXY_HOPS) is refused as a request error, not a server fault."""
        return _protocol_error(InvalidRequest("the IdP must be reached over https (or through a trusted proxy)"))

    @app.errorhandler(UnsafeAuthorizationRequest)
    def _unsafe_request(exc: UnsafeAuthorizationRequest) -> tuple[str, int]:
        return render_template("error.html", message=exc.description), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | tuple[str, int]:
        code = exc.code or 500
        if _wants_html():
            return render_template("error.html", message=exc.description or exc.name), code
        error = {404: "not_found", 405: "invalid_request", 413: "invalid_request", 429: "rate_limited"}.get(
            code, "invalid_request" if code < 500 else "server_error")
        response = jsonify({"error": error, "error_description": exc.description or exc.name})
        response.status_code = code
        for key, value in (exc.get_headers() or []):
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    _internal(app)


def _internal(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        """Last resort: log the fault, answer in the protocol's format without internals."""
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        response = jsonify({"error": "server_error", "error_description": "internal error"})
        response.status_code = 500
        return response


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.method == "GET"
