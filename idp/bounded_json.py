"""JSON with a bounded size and nesting depth, checked before the parser runs.

Python's ``json`` recurses once per nesting level: a body of 3000 ``[`` raises
``RecursionError`` deep inside whichever library parses it (Flask, authlib, joserfc),
which becomes a 5xx. No document of this protocol nests deeper than a few levels
(``verified_claims`` of OIDC for Identity Assurance is the deepest, under ten), so
anything beyond ``MAX_DEPTH`` is refused as malformed before it is parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_BYTES = 256 * 1024
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_JWS = re.compile(r"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?$")


class JsonBoundsError(ValueError):
    """A document too large or too deeply nested to be parsed."""


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (string contents ignored)."""
    deepest = level = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', data)):
        level += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, level)
    return deepest


def check(data: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> None:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise JsonBoundsError(f"the JSON document is larger than {max_bytes} bytes")
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth(raw) > max_depth:
        raise JsonBoundsError(f"the JSON document nests deeper than {max_depth} levels")


def loads(data: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` after the bounds check; every failure is a ValueError."""
    check(data, max_bytes=max_bytes, max_depth=max_depth)
    return json.loads(data)


def check_jwt(text: str) -> None:
    """Bound the JSON inside a compact JWS/JWE's header and payload segments (RFC 7515 §7.1).

    Only the first two segments are JSON in a JWS; a JWE's second segment is an encrypted
    key and decodes to something that is not JSON, which is harmless here.
    """
    if not _JWS.match(text):
        return
    for segment in text.split(".")[:2]:
        try:
            decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            continue
        check(decoded)


def looks_like_jwt(text: str) -> bool:
    return bool(_JWS.match(text))
