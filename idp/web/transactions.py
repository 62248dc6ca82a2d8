"""An authorization transaction as the login and consent steps load it (PROTOCOL §4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, and_, bindparam, select

from idp.device.assertions import FoundDevice
from idp.errors import InvalidRequest, NotFound
from idp.oidc.server import remember_client
from idp.oidc.session import current_db
from idp.storage.models import (
    Account,
    AuthorizationTransaction,
    Client,
    Consent,
    CredentialLockout,
    DeviceCertificate,
    utcnow,
)
from idp.web import i18n


def load_transaction(txn_id: Any, *, lock: bool = False) -> AuthorizationTransaction:
    return _loaded(current_db().execute(_LOCKED if lock else _UNLOCKED, {"txn_id": _checked_id(txn_id)}).first())


def load_for_assertion(txn_id: Any, credential_id: bytes | None, *,
                       address: str) -> tuple[AuthorizationTransaction, FoundDevice | None]:
    """The transaction with the device that answers it, in one statement: the transaction and
    its client, and the credential's device certificate, account, this address's lock-out
    count and the account's consent for the transaction's client (None: no such credential).

    Nothing is locked: the login writes its outcome with compare-and-sets on the transaction
    and on the device (idp.web.login), which fail when either changed since this read."""
    found = current_db().execute(_FOR_ASSERTION, {"txn_id": _checked_id(txn_id), "credential_id": credential_id,
                                                  "address": address}).first()
    txn = _loaded(found)
    assert found is not None
    device = found.DeviceCertificate
    if device is None:
        return txn, None
    return txn, FoundDevice(device, found.Account, found.failed_attempts, found.locked_until, found.Consent)


def _checked_id(txn_id: Any) -> str:
    if not isinstance(txn_id, str) or not txn_id or len(txn_id) > 64:
        raise InvalidRequest("txn is required")
    return txn_id


def _loaded(found: Row[Any] | None) -> AuthorizationTransaction:
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

_LOCKOUT = CredentialLockout.__table__.c
_FOR_ASSERTION = (
    select(AuthorizationTransaction, Client.__table__, DeviceCertificate, Account, _LOCKOUT.failed_attempts,
           _LOCKOUT.locked_until, Consent)
    .outerjoin(Client.__table__, Client.__table__.c.client_id == AuthorizationTransaction.client_id)
    .outerjoin(DeviceCertificate, DeviceCertificate.credential_id == bindparam("credential_id"))
    .outerjoin(Account, Account.id == DeviceCertificate.account_id)
    .outerjoin(CredentialLockout, and_(_LOCKOUT.device_serial == DeviceCertificate.serial,
                                       _LOCKOUT.address == bindparam("address")))
    .outerjoin(Consent, and_(Consent.account_id == DeviceCertificate.account_id,
                             Consent.client_id == AuthorizationTransaction.client_id))
    .where(AuthorizationTransaction.id == bindparam("txn_id"))
    .execution_options(populate_existing=True))
