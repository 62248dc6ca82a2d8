"""What the test clients share: an HTTP error carrying the IdP's protocol error body."""

from __future__ import annotations

from typing import Any

import requests


def body_of(response: requests.Response) -> Any:
    """The parsed JSON body, or the text when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpError(Exception):
    """The IdP answered with a non-2xx status.

    ``body`` is the parsed JSON error (``{"error", "error_description"}``) or the raw
    text when the body is not JSON, so tests can assert the machine error code.
    """

    def __init__(self, status: int, body: Any, response: requests.Response | None = None) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body
        self.response = response

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def description(self) -> str | None:
        return self.body.get("error_description") if isinstance(self.body, dict) else None

    @property
    def retry_after(self) -> str | None:
        """The Retry-After header of a 429 or 423 (PROTOCOL §1, §6)."""
        return self.response.headers.get("Retry-After") if self.response is not None else None
