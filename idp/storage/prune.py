"""Deleting what can no longer be used, so one-time state does not grow without bound.

Only rows past their own expiry (plus a day's grace for investigations) go: finished or
expired authorization transactions (with their codes) and enrolments, pushed requests,
remembered one-time values, ended browser sessions, and tokens whose access and refresh
lifetimes are both over; disclosure records after ``DISCLOSURE_RETENTION`` (the period the
README promises people). Consents, certificates and the audit log are kept (the audit log
leaves only through ``idp audit archive``).
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from idp.storage.models import (
    AuthorizationTransaction,
    BrowserSession,
    Disclosure,
    Enrollment,
    ParRequest,
    SeenOnce,
    SessionClient,
    Token,
    utcnow,
)

GRACE = timedelta(days=1)
DISCLOSURE_RETENTION = timedelta(days=3 * 365)


def prune(session: Session) -> dict[str, int]:
    cutoff = utcnow() - GRACE
    epoch_cutoff = int(time.time() - GRACE.total_seconds())
    ended = or_(BrowserSession.expires_at < cutoff, BrowserSession.ended_at < cutoff)
    ended_ids = session.scalars(select(BrowserSession.id).where(ended)).all()
    counts = {
        # with the code each may have ended in (kept on it)
        "authorization_transactions": and_(AuthorizationTransaction.expires_at < cutoff,
                                           or_(AuthorizationTransaction.code_expires_at.is_(None),
                                               AuthorizationTransaction.code_expires_at < cutoff)),
        "par_requests": ParRequest.expires_at < cutoff,
        "seen_once": SeenOnce.expires_at < utcnow(),
        "enrollments": or_(and_(Enrollment.activation_expires_at.is_(None), Enrollment.expires_at < cutoff),
                           Enrollment.activation_expires_at < cutoff),
        "tokens": and_(Token.issued_at + Token.expires_in < epoch_cutoff,
                       or_(Token.refresh_expires_at.is_(None), Token.refresh_expires_at < epoch_cutoff)),
    }
    models = {"authorization_transactions": AuthorizationTransaction, "par_requests": ParRequest, "seen_once": SeenOnce, "enrollments": Enrollment, "tokens": Token}
    result = {name: session.execute(delete(models[name]).where(condition)).rowcount
              for name, condition in counts.items()}
    result["disclosures"] = session.execute(delete(Disclosure).where(
        Disclosure.at < utcnow() - DISCLOSURE_RETENTION)).rowcount
    session.execute(delete(SessionClient).where(SessionClient.session_id.in_(ended_ids)))
    result["browser_sessions"] = session.execute(delete(BrowserSession).where(
        BrowserSession.id.in_(ended_ids))).rowcount
    return result
