"""Consent records and the disclosure log (PROTOCOL §4.6, §6).

A remembered consent answers a later request silently only when it covers the same
(or a larger) set of claims, the same purpose and the same policy version; anything
else asks the person again. Withdrawal stops silent logins and revokes that RP's
refresh tokens at once.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import audit
from idp.oidc.token_family import revoke_tokens
from idp.storage.models import Consent, Disclosure, utcnow
from idp.storage.rows import insert_row


def find_consent(session: Session, account_id: str, client_id: str) -> Consent | None:
    return session.scalars(_CONSENT, {"account_id": account_id, "client_id": client_id}).first()


_CONSENT = select(Consent).where(Consent.account_id == bindparam("account_id"),
                                 Consent.client_id == bindparam("client_id"))


def consent_active(session: Session, account_id: str, client_id: str) -> bool:
    consent = find_consent(session, account_id, client_id)
    return consent is not None and consent.withdrawn_at is None


def consent_covers(consent: Consent | None, *, claims: Iterable[str], scopes: Iterable[str],
                   purpose: str, policy_version: str) -> bool:
    if consent is None or consent.withdrawn_at is not None:
        return False
    return (set(claims) <= set(consent.claims) and set(scopes) <= set(consent.scopes)
            and consent.purpose == purpose and consent.policy_version == policy_version)


def grant_consent(session: Session, *, account_id: str, client_id: str, claims: Iterable[str],
                  scopes: Iterable[str], purpose: str, policy_version: str, remember: bool) -> None:
    """Record the decision; ``remember=False`` keeps a record but lets no later login skip the page."""
    consent = find_consent(session, account_id, client_id)
    if consent is None:
        consent = _first_consent(session, Consent(account_id=account_id, client_id=client_id, claims=[], scopes=[],
                                                  purpose=purpose, policy_version="", granted_at=utcnow()))
    consent.claims = sorted(set(claims))
    consent.scopes = sorted(set(scopes))
    consent.purpose = purpose
    consent.policy_version = policy_version if remember else ""
    consent.granted_at = utcnow()
    consent.withdrawn_at = None
    session.flush()
    audit.record(session, "consent.granted", account=account_id, client=client_id,
                 claims=consent.claims, remembered=remember)


def _first_consent(session: Session, row: Consent) -> Consent:
    """Insert the row, or take the one a parallel first consent (another tab) just inserted:
    the unique key decides, and the loser updates the winner's row instead of failing."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
        return row
    except IntegrityError:
        existing = find_consent(session, row.account_id, row.client_id)
        if existing is None:
            raise
        return existing


def withdraw_consent(session: Session, account_id: str, client_id: str) -> bool:
    consent = find_consent(session, account_id, client_id)
    if consent is None or consent.withdrawn_at is not None:
        return False
    consent.withdrawn_at = utcnow()
    revoke_tokens(session, account_id=account_id, client_id=client_id)
    audit.record(session, "consent.withdrawn", account=account_id, client=client_id)
    return True


def record_disclosure(session: Session, account_id: str, client_id: str, claims: list[str], channel: str) -> None:
    if claims:
        insert_row(session, Disclosure, account_id=account_id, client_id=client_id, claims=claims, channel=channel)
