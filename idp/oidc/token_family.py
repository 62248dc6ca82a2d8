"""Token families: ending everything that descends from a grant, at once (PROTOCOL §7.6).

A family is every access and refresh token descending from one authorization code
(refresh rotation keeps the code's digest, ``Token.code_hash``). Tokens also record the
device certificate whose login they came from (``device_serial``). Ending a family is a
single ``UPDATE`` in the database every instance reads on each use, so it holds on all
instances the moment it commits; codes not yet exchanged are spent with it.

Callers: device revocation or suspension (RFC 5280 reasons), consent withdrawal, client
disabling or deletion (RFC 7592 §2.3), and refresh-token reuse (RFC 9700 §4.14.2).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from idp.storage.models import AuthorizationTransaction, Token, utcnow


def revoke_tokens(session: Session, *, device_serial: str | None = None, account_id: str | None = None,
                  client_id: str | None = None, family: str | None = None) -> int:
    """Revoke every token (and spend every unused code) matching all the given selectors;
    returns how many live tokens were ended. At least one selector is required."""
    token_where: list[ColumnElement[bool]] = []
    code_where: list[ColumnElement[bool]] = []
    codes = AuthorizationTransaction  # a code is kept on the transaction it ended
    for value, token_column, code_column in (
            (device_serial, Token.device_serial, codes.device_serial),
            (account_id, Token.account_id, codes.account_id),
            (client_id, Token.client_id, codes.client_id),
            (family, Token.code_hash, codes.code_hash)):
        if value is not None:
            token_where.append(token_column == value)
            code_where.append(code_column == value)
    if not token_where:
        raise ValueError("revoke_tokens needs a device, account, client or family")
    ended = session.execute(update(Token).where(*token_where, Token.revoked.is_(False)).values(revoked=True)
                            .execution_options(synchronize_session="fetch")).rowcount
    session.execute(update(codes).where(*code_where, codes.code_hash.is_not(None), codes.code_used_at.is_(None))
                    .values(code_used_at=utcnow()).execution_options(synchronize_session="fetch"))
    return ended
