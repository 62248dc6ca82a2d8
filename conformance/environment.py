"""What every module may use: the OP under test, the person, the RP's web host, the knobs."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.client import Person
from tests.support.rp_host import RpHost


@dataclass(frozen=True)
class Options:
    """Waits the official suite hard-codes, made configurable so CI stays fast.

    ``code_reuse_wait``: oidcc-codereuse-30seconds (WaitFor30Seconds).
    ``jwks_refresh_wait``: oidcc-refresh-token-rp-key-rotation (WaitForJWKSRefreshDelay): the
    OP refetches a ``jwks_uri`` for an unknown ``kid`` at most every 10 s
    (idp/clients/keys.py), so the runner waits a little longer than that.
    ``category``: the ``rp_category`` every registration sends (PROTOCOL §2 requires one).
    """

    code_reuse_wait: float = 30.0
    jwks_refresh_wait: float = 11.0
    key_rotation_grace: int = 3
    category: str = "municipal"


@dataclass
class Environment:
    issuer: str
    provider: dict[str, Any]
    person: Person
    rp_host: RpHost
    options: Options = field(default_factory=Options)
    rotate_keys: Callable[[int], None] | None = None  # runs `idp keys rotate --grace N`
    age_codes: Callable[[int], None] | None = None  # makes every authorization code N seconds older
    registration_token: str | None = None

    def callback_url(self, module: str) -> str:
        """A redirect URI on the RP host, unique per module (never fetched: the flow stops there)."""
        return self.rp_host.url(f"/cb/{module}/{secrets.token_hex(4)}")
