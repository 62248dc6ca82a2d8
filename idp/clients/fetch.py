"""Fetching RP-hosted JSON (``sector_identifier_uri``, ``jwks_uri``) safely.

Short timeout, size cap, no redirects, https only (loopback http when the deployment
allows it for tests): an RP must not be able to make the IdP hang, fill its memory or
reach internal services through these URLs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import requests

from idp.settings import LOOPBACK_HOSTS

TIMEOUT_SECONDS = 5
MAX_BYTES = 64 * 1024


class FetchError(ValueError):
    pass


def check_url(url: str, *, allow_http_loopback: bool) -> None:
    parts = urlsplit(url)
    if parts.fragment:
        raise FetchError(f"{url} must not have a fragment")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_http_loopback and parts.hostname in LOOPBACK_HOSTS:
        return
    raise FetchError(f"{url} must be an https URL")


def fetch_bytes(url: str, *, allow_http_loopback: bool, accept: str = "application/json",
                timeout: float = TIMEOUT_SECONDS) -> bytes:
    """GET ``url`` (no fragment, no redirects, capped size); a non-200 answer is a FetchError."""
    check_url(url, allow_http_loopback=allow_http_loopback)
    try:
        with requests.get(url, timeout=timeout, allow_redirects=False, stream=True,
                          headers={"Accept": accept}) as response:
            if response.status_code != 200:
                raise FetchError(f"{url} answered HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_content(8192):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FetchError(f"{url} is larger than {MAX_BYTES} bytes")
    except requests.RequestException as exc:
        raise FetchError(f"{url} could not be fetched ({type(exc).__name__})") from exc
    return body


def fetch_json(url: str, *, allow_http_loopback: bool) -> Any:
    body = fetch_bytes(url, allow_http_loopback=allow_http_loopback)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{url} is not JSON") from exc
