"""Strict decoding of the JSON bodies and binary fields the wallet and RPs send.

PROTOCOL "Encodings": binary fields are unpadded base64url unless a field says base64.
Anything that does not decode is the sender's error (400), never ours (500).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from flask import request

from idp.errors import InvalidRequest

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    if not isinstance(value, str) or not _B64URL.match(value) or len(value) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64_decode(value: Any, field: str, *, max_bytes: int = 16384) -> bytes:
    """Standard base64 (padding optional), as PROTOCOL §3 uses for DER and signatures."""
    if not isinstance(value, str) or len(value) > max_bytes * 4 // 3 + 4 or not _B64.match(value):
        raise InvalidRequest(f"{field} must be base64")
    try:
        return base64.b64decode(value + "=" * (-len(value.rstrip("=")) % 4) if "=" not in value else value,
                                validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} must be base64") from None


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def string_field(body: dict[str, Any], name: str, *, max_length: int = 256) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length or not _utf8(value):
        raise InvalidRequest(f"{name} must be a non-empty string")
    return value


def _utf8(value: str) -> bool:
    """JSON may carry lone surrogates (``"\\udc80"``, or raw bytes that are not UTF-8):
    no database can store them, so they are the sender's error."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
