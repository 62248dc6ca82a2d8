"""The trust service's public endpoints: CA certificate, CRL (RFC 5280 §5) and OCSP (RFC 6960)."""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from idp.ca import lifecycle
from idp.ca.ocsp import respond
from idp.context import services
from idp.errors import InvalidRequest
from idp.oidc.session import current_db
from idp.storage.models import utcnow

bp = Blueprint("ca", __name__)
MAX_OCSP_REQUEST = 4096


@bp.get("/ca/certificate")
def ca_certificate() -> ResponseReturnValue:
    return Response(services().ca.certificate_der, content_type="application/pkix-cert",
                    headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/ca/crl")
def crl() -> ResponseReturnValue:
    der = lifecycle.current_crl(current_db(), services().ca)
    return Response(der, content_type="application/pkix-crl", headers={"Cache-Control": "public, max-age=300"})


def _ocsp(request_der: bytes) -> Response:
    session = current_db()
    der = respond(services().ca, request_der, lookup=lambda serial: lifecycle.ocsp_status(session, serial),
                  now=utcnow())
    return Response(der, content_type="application/ocsp-response", headers={"Cache-Control": "no-store"})


@bp.post("/ca/ocsp")
def ocsp_post() -> ResponseReturnValue:
    """RFC 6960 Appendix A.1: POST with Content-Type application/ocsp-request."""
    if request.mimetype != "application/ocsp-request":
        raise InvalidRequest("Content-Type must be application/ocsp-request")
    data = request.get_data(cache=False)
    if len(data) > MAX_OCSP_REQUEST:
        raise InvalidRequest("OCSP request too large")
    return _ocsp(data)


@bp.get("/ca/ocsp/<path:encoded>")
def ocsp_get(encoded: str) -> ResponseReturnValue:
    """RFC 6960 Appendix A.1: GET with the base64 DER request in the path."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        data = b""  # answered as malformedRequest by the responder
    return _ocsp(data[:MAX_OCSP_REQUEST])
