"""An authorization transaction as the login and consent steps load it (PROTOCOL §4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from idp.errors import InvalidRequest, NotFound
from idp.oidc.server import remember_client
from idp.oidc.session import current_db
from idp.storage.models import AuthorizationTransaction, Client, utcnow
from idp.web import i18n


def load_transaction(txn_id: Any, *, lock: bool = False) -> AuthorizationTransaction:
    if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 64:
        raise InvalidRequest("txn is required")
    # One statement: the transaction (locked when asked) with its client, which every step needs
    statement = (select(AuthorizationTransaction, Client)
                 .outerjoin(Client, Client.client_id == AuthorizationTransaction.client_id)
                 .where(AuthorizationTransaction.id == txn_id)
                 .execution_options(populate_existing=True))
    if lock:
        statement = statement.with_for_update(of=AuthorizationTransaction)
    found = current_db().execute(statement).first()
    if found is None:
        raise NotFound("unknown transaction", error="invalid_transaction")
    txn, client = found
    remember_client(txn.client_id, client)
    if txn.state == "pending" and txn.expires_at <= utcnow():
        txn.state = "expired"
    i18n.use_transaction_locale(txn.request.get("ui_locales"), txn.created_at)
    return txn
