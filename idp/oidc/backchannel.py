"""OpenID Connect Back-Channel Logout 1.0: tell every RP of an ending session.

- §2.7: when an IdP session ends, each RP that received a code in that session (recorded
  in ``session_clients`` when the code was issued) and registered a
  ``backchannel_logout_uri`` gets a Logout Token.
- §2.4: the Logout Token is a JWT signed by the OP (the client's ID token algorithm) with
  ``iss``, ``aud`` (the client), ``iat``, ``exp``, ``jti``, ``events`` naming
  ``http://schemas.openid.net/event/backchannel-logout``, the per-client ``sid`` that RP saw in
  its ID tokens and the pairwise ``sub``; never a ``nonce`` (§2.4). Header ``typ`` is
  ``logout+jwt`` (§2.4, explicit typing).
- §2.5: it is POSTed as ``logout_token`` (form-encoded) with a short timeout, no redirects,
  from a small thread pool, so a slow or dead RP never holds up the person's logout.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from joserfc import jwt
from sqlalchemy import select

from idp.clients.fetch import FetchError, check_url
from idp.clients.registry import RegisteredClient
from idp.context import services
from idp.oidc import claims as claims_mod
from idp.oidc.session import current_db
from idp.storage.models import BrowserSession, SessionClient
from idp.web.browser import client_sid

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_LIFETIME_SECONDS = 120
TIMEOUT_SECONDS = 3
WORKERS = 4

log = logging.getLogger("idp.backchannel")
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    """One logout token for one RP endpoint."""

    client_id: str
    uri: str
    token: str


def logout_token(client: RegisteredClient, session: BrowserSession) -> str:
    """The signed Logout Token for ``client`` about ``session`` (§2.4)."""
    svc = services()
    entry = svc.keystore.signing_key(client.id_token_signed_response_alg)
    now = int(time.time())
    payload = {
        "iss": svc.settings.issuer,
        "sub": claims_mod.subject(session.account_id, client.sector, svc.pairwise_salt),
        "aud": client.client_id,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECONDS,
        "jti": secrets.token_urlsafe(24),
        "events": {EVENT: {}},
        "sid": client_sid(session.sid, client.client_id),
    }
    header = {"alg": entry.alg, "kid": entry.kid, "typ": "logout+jwt"}
    return jwt.encode(header, payload, entry.key, algorithms=[entry.alg])


def deliveries_for(session: BrowserSession) -> list[Delivery]:
    """Logout tokens for every RP of ``session`` that registered a back-channel URI."""
    from idp.oidc.server import query_client

    db = current_db()
    client_ids = db.scalars(select(SessionClient.client_id).where(SessionClient.session_id == session.id)).all()
    found = []
    for client_id in sorted(set(client_ids)):
        client = query_client(client_id)
        uri = client.metadata.get("backchannel_logout_uri") if client else None
        if client is not None and isinstance(uri, str):
            found.append(Delivery(client_id, uri, logout_token(client, session)))
    return found


def send(delivery: Delivery, *, allow_http_loopback: bool) -> bool:
    """POST one token (§2.5); True when the RP answered 200 or 204."""
    try:
        check_url(delivery.uri, allow_http_loopback=allow_http_loopback)
        response = requests.post(delivery.uri, data={"logout_token": delivery.token}, timeout=TIMEOUT_SECONDS,
                                 allow_redirects=False, headers={"Cache-Control": "no-store"})
    except (FetchError, requests.RequestException) as exc:
        log.warning("back-channel logout to client %s failed: %s", delivery.client_id, type(exc).__name__)
        return False
    if response.status_code not in (200, 204):
        log.warning("back-channel logout to client %s answered HTTP %s", delivery.client_id, response.status_code)
        return False
    return True


def dispatch(deliveries: list[Delivery]) -> None:
    """Send in the background; the caller's response does not wait for RPs."""
    if not deliveries:
        return
    allow = services().settings.allow_http_loopback
    executor = _pool()
    for delivery in deliveries:
        executor.submit(send, delivery, allow_http_loopback=allow)


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="backchannel-logout")
        return _executor
