"""The response-header policy: what a browser may do with the IdP's answers.

- Every page refuses framing (CSP ``frame-ancestors 'none'`` and, for older browsers,
  ``X-Frame-Options: DENY``): a framed consent page lets one click on another site release
  a code (RFC 9700 §4.16, clickjacking).
- Pages run only the IdP's own scripts and styles (``script-src 'self'``, ``style-src
  'self'``; no inline code exists to allow), load images from the IdP, ``data:`` (the QR
  code) and https (an RP's registered ``logo_uri``; loopback http too for a development
  issuer), and talk only to the IdP. No
  ``form-action``: after consent the IdP redirects the browser to the RP, and browsers
  apply ``form-action`` to that redirect too.
- Pages are ``Cache-Control: no-store``: each shows personal data or carries a one-time
  form token, and none may be kept by a shared or back-button cache.
- ``Referrer-Policy: no-referrer``: page URLs carry transaction handles.
- ``X-Content-Type-Options: nosniff`` on every answer; ``Strict-Transport-Security`` on
  every answer when the issuer is https (RFC 6797 §7.1).
"""

from __future__ import annotations

from flask import Flask, Response

# A development issuer's RPs (the demo's, a developer's) show logos from loopback http.
DEVELOPMENT_IMAGES = " http://localhost:* http://127.0.0.1:*"


def page_policy(*, development: bool) -> str:
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: https:" + (DEVELOPMENT_IMAGES if development else ""),
        "connect-src 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ))


# A JSON answer or a file is never a document to render or frame.
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"


def init_app(app: Flask) -> None:
    settings = app.extensions["idp"].settings
    policy = page_policy(development=settings.development)
    https = settings.issuer.startswith("https://")

    @app.after_request
    def _policy(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if https:
            headers.setdefault("Strict-Transport-Security", HSTS)
        if response.mimetype == "text/html":
            headers["Content-Security-Policy"] = policy
            headers["X-Frame-Options"] = "DENY"
            headers["Cache-Control"] = "no-store"
        else:
            headers.setdefault("Content-Security-Policy", OTHER_POLICY)
        return response
