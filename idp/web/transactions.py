"""An authorization transaction as the login and consent steps load it (PROTOCOL §4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from idp.errors import InvalidRequest, NotFound
from idp.oidc.server import remember_client
from idp.oidc.session import current_db
from idp.storage.models import AuthorizationTransaction, Client, utcnow
from idp.web import i18n


def load_transaction(txn_id: Any, *, lock: bool = False) -> AuthorizationTransaction:
    if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 64:
        raise InvalidRequest("txn is required")
    statement = _LOCKED if lock else _UNLOCKED
    found = current_db().execute(statement, {"txn_id": txn_id}).first()
    if found is None:
        raise NotFound("unknown transaction", error="invalid_transaction")
    txn = found[0]
    # the client's columns follow the transaction (None when it is no longer registered)
    remember_client(txn.client_id, found if found.client_id is not None else None)
    if txn.state == "pending" and txn.expires_at <= utcnow():
        txn.state = "expired"
    i18n.use_transaction_locale(txn.request.get("ui_locales"), txn.created_at)
    return txn


# One statement, built once: the transaction (locked when asked) with its client, which every step needs
_UNLOCKED = (select(AuthorizationTransaction, Client.__table__)
             .outerjoin(Client.__table__, Client.__table__.c.client_id == AuthorizationTransaction.client_id)
             .where(AuthorizationTransaction.id == bindparam("txn_id"))
             .execution_options(populate_existing=True))
_LOCKED = _UNLOCKED.with_for_update(of=AuthorizationTransaction)
