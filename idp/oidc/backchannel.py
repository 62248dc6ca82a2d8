"""OpenID Connect Back-Channel Logout 1.0: tell every RP of an ending session.

- §2.7: when an IdP session ends, each RP that received a code in that session (recorded
  in ``session_clients`` when the code was issued) and registered a
  ``backchannel_logout_uri`` gets a Logout Token.
- §2.4: the Logout Token is a JWT signed by the OP (the client's ID token algorithm) with
  ``iss``, ``aud`` (the client), ``iat``, ``exp``, ``jti``, ``events`` naming
  ``http://schemas.openid.net/event/backchannel-logout``, the per-client ``sid`` that RP saw in
  its ID tokens and the pairwise ``sub``; never a ``nonce`` (§2.4). Header ``typ`` is
  ``logout+jwt`` (§2.4, explicit typing).
- §2.5: it is POSTed as ``logout_token`` (form-encoded) through the outbound-fetch guard
  (public https host, no redirects, a total deadline per attempt, size cap). The person's
  logout never waits: deliveries go to a small bounded queue served by a few sender
  threads, so one slow or dead RP delays no other; a failed delivery is retried after
  ``RETRY_DELAYS`` and logged; when the queue is full the delivery is dropped and logged
  (§2.8: an RP that misses a token still ends its session when its own one expires).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from joserfc import jwt
from sqlalchemy import select

from idp.clients.fetch import FetchError, fetch
from idp.clients.registry import RegisteredClient
from idp.context import services
from idp.oidc import claims as claims_mod
from idp.oidc.session import current_db
from idp.storage.models import BrowserSession, SessionClient
from idp.web.browser import client_sid

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_LIFETIME_SECONDS = 120
DEADLINE_SECONDS = 3.0  # per attempt, per RP
WORKERS = 4
QUEUE_CAPACITY = 1000
RETRY_DELAYS = (2.0, 10.0, 60.0)

log = logging.getLogger("idp.backchannel")


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
    """POST one token (§2.5); True when the RP answered 200 or 204 within the deadline."""
    try:
        answer = fetch(delivery.uri, allow_http_loopback=allow_http_loopback, method="POST",
                       body=urlencode({"logout_token": delivery.token}).encode("ascii"),
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"},
                       deadline=DEADLINE_SECONDS, bounded=False)
    except FetchError as exc:
        log.warning("back-channel logout to client %s failed: %s", delivery.client_id, exc.detail)
        return False
    if answer.status not in (200, 204):
        log.warning("back-channel logout to client %s answered HTTP %s", delivery.client_id, answer.status)
        return False
    return True


class Sender:
    """A bounded queue of deliveries and ``workers`` threads that send them, with retries.

    Entries wait in a heap by the time they may be (re)tried. A delivery that fails is
    put back after the next of ``retry_delays``; after the last it is logged and dropped.
    """

    def __init__(self, *, workers: int = WORKERS, capacity: int = QUEUE_CAPACITY,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self._workers = workers
        self._capacity = capacity
        self._retry_delays = retry_delays
        self._heap: list[tuple[float, int, Delivery, int, bool]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []

    def submit(self, delivery: Delivery, *, allow_http_loopback: bool) -> bool:
        with self._ready:
            if len(self._heap) >= self._capacity:
                log.error("back-channel logout queue full: token for client %s dropped", delivery.client_id)
                return False
            self._push(time.monotonic(), delivery, 0, allow_http_loopback)
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._run, name="backchannel-logout", daemon=True)
                self._threads.append(thread)
                thread.start()
        return True

    def _push(self, when: float, delivery: Delivery, attempt: int, allow: bool) -> None:
        heapq.heappush(self._heap, (when, next(self._order), delivery, attempt, allow))
        self._ready.notify()

    def _next(self) -> tuple[Delivery, int, bool]:
        with self._ready:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _when, _order, delivery, attempt, allow = heapq.heappop(self._heap)
                    return delivery, attempt, allow
                self._ready.wait(self._heap[0][0] - now if self._heap else None)

    def _run(self) -> None:
        while True:
            delivery, attempt, allow = self._next()
            if send(delivery, allow_http_loopback=allow):
                continue
            if attempt < len(self._retry_delays):
                with self._ready:
                    self._push(time.monotonic() + self._retry_delays[attempt], delivery, attempt + 1, allow)
            else:
                log.error("back-channel logout to client %s failed %d times; given up", delivery.client_id,
                          attempt + 1)


_sender = Sender()


def dispatch(deliveries: list[Delivery]) -> None:
    """Queue for the background senders; the caller's response does not wait for RPs."""
    allow = services().settings.allow_http_loopback if deliveries else False
    for delivery in deliveries:
        _sender.submit(delivery, allow_http_loopback=allow)
