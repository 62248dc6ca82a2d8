"""Who may register a client, and who decides its category (docs/rp-integration.md, "Onboarding").

The category decides what an RP may receive, so the RP must not simply declare it. A
registration request is admitted by one of:

(a) an initial access token minted for category C (RFC 7591 §3): the client is of C, and a
    differing ``rp_category`` in the body is ``invalid_client_metadata``;
(b) a software statement signed by the trust authority (RFC 7591 §2.3): its claims,
    ``rp_category`` among them, win over the body (§3.1.1);
(c) the operator's master token ``IDP_REGISTRATION_TOKEN``: any category, from the body.

Without any of these the answer is ``401``, except on a development (http://localhost)
issuer without a master token, where registration stays open with ``rp_category`` from the
body. A bearer token that is neither (c)'s master token nor a live initial access token is
always ``401``: a wrong credential never falls back to open registration.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from idp.clients import initial_access, software_statement
from idp.errors import InvalidClientMetadata, Unauthorized
from idp.settings import Settings

CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class Admission:
    """How a registration was admitted, and the metadata to validate (statement merged in)."""

    via: str  # "initial_access_token" | "software_statement" | "registration_token" | "open"
    body: dict[str, Any]
    category: str | None  # fixed by the token or statement; None: the body's rp_category decides


def admit(session: Session, settings: Settings, authority_keys: KeySet | None,
          authorization: str, body: Any) -> Admission:
    """Decide whether this registration may proceed and under which category."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("the registration request must be a JSON object")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    if authorization and bearer is None:
        raise Unauthorized("registration accepts only a Bearer token (RFC 6750 §2.1)", headers=CHALLENGE)

    token_category: str | None = None
    via = "open"
    if bearer:
        master = settings.registration_token
        candidates = _token_forms(bearer)
        if master and any(hmac.compare_digest(c.encode(), master.encode()) for c in candidates):
            via = "registration_token"
        else:
            token_category = next(filter(None, (initial_access.spend(session, c) for c in candidates)), None)
            if token_category is None:
                raise Unauthorized("the initial access token is unknown, expired or used up", headers=CHALLENGE)
            via = "initial_access_token"

    statement_category: str | None = None
    if "software_statement" in body:
        claims = software_statement.verify(body["software_statement"], authority_keys, issuer=settings.issuer)
        statement_category = claims["rp_category"]
        body = {**body, **claims}  # RFC 7591 §3.1.1: the statement's values take precedence
        via = via if bearer else "software_statement"

    if via == "open" and (settings.registration_token or not settings.development):
        raise Unauthorized("registration needs an initial access token, a software statement or the "
                           "registration token: it is never open on a production issuer", headers=CHALLENGE)

    category = statement_category or token_category
    if token_category and category != token_category:
        raise InvalidClientMetadata(f"the software statement's rp_category {category!r} differs from the "
                                    f"initial access token's {token_category!r}")
    if category is not None:
        declared = body.get("rp_category", category)
        if declared != category:
            raise InvalidClientMetadata(f"rp_category {declared!r} differs from the category this client is "
                                        f"admitted for ({category!r})")
        body = {**body, "rp_category": category}
    return Admission(via=via, body=body, category=category)


def _token_forms(bearer: str) -> list[str]:
    """The token as sent, and, when it is standard base64 of a printable token, as decoded:
    pyoidc's stock ``Client.register(url, registration_token=...)`` base64-encodes any
    initial access token that is not a JWT before sending it. Knowing either form is
    knowing the token, so accepting both widens nothing."""
    forms = [bearer]
    try:
        decoded = base64.b64decode(bearer, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return forms
    if decoded.isprintable() and decoded != bearer and 0 < len(decoded) <= 256:
        forms.append(decoded)
    return forms
