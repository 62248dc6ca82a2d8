"""Refuse NUL characters in any request input, once, before any view runs.

No protocol value may contain U+0000, and PostgreSQL cannot store it in text or JSON
(the driver raises), so without this one guard a stray ``%00`` in a ``txn``, a
``client_id`` or a registration document would reach the database and become a 5xx.
"""

from __future__ import annotations

from flask import Flask, request

from idp.errors import InvalidRequest, UnsafeAuthorizationRequest

PAGES = ("/authorize", "/login", "/consent", "/logout", "/account", "/demo")
MESSAGE = "the request contains a NUL character"


def _has_nul() -> bool:
    if any("\x00" in key or "\x00" in value for key, value in request.args.items(multi=True)):
        return True
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if any("\x00" in key or "\x00" in value for key, value in request.form.items(multi=True)):
            return True
    if request.is_json:
        body = request.get_data(cache=True)
        return b"\x00" in body or b"\\u0000" in body
    return False


def init_app(app: Flask) -> None:
    @app.before_request
    def _refuse_nul() -> None:
        if request.view_args and any("\x00" in str(v) for v in request.view_args.values()) or _has_nul():
            if request.method == "GET" and request.path.startswith(PAGES):
                raise UnsafeAuthorizationRequest(MESSAGE)
            raise InvalidRequest(MESSAGE)
