"""Recognising a person's card certificates without keeping their serial numbers.

A JPKI signing certificate is recognised by ``HMAC(jpki-link.key, serial)``: enough to
tell the same card (or an operator-linked renewal) again, useless to anyone without the
key, and never the serial itself (its disclosure is restricted). Nothing here touches
the individual number.

JPKI revocation policy (README, "JPKI revocation"): when a card certificate that proved
an account appears on a JPKI CRL, the account's verified attributes stop being released
as current until the person proves again with the new card certificate. When the
reason suggests the card itself may be in the wrong hands or the person's status ended
(:data:`SUSPENDING_REASONS`), device certificates enrolled with that card are also
suspended (certificateHold) until a fresh proof.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import audit
from idp.ca import lifecycle
from idp.proofing.jpki import JpkiError
from idp.storage.models import Account, DeviceCertificate, JpkiBinding, JpkiLink, utcnow

SUSPENDING_REASONS = frozenset({"keyCompromise", "cACompromise", "privilegeWithdrawn", "certificateHold",
                                "cessationOfOperation"})


def serial_digest(key: bytes, serial_number: int) -> str:
    return hmac.new(key, b"jpki-serial:" + format(serial_number, "x").encode(), hashlib.sha256).hexdigest()


def link_serials(session: Session, services, pairs: Iterable[tuple[int, int]]) -> str:  # type: ignore[no-untyped-def]
    """Record renewals (old → new) as one unit: any bad pair refuses the whole import.

    OLD must have proved an account, or be the NEW of a link recorded earlier (in the
    database or earlier in this import), so renewals chain. Refused: OLD equal to NEW, a NEW
    already linked to another card, and a NEW that already proved an account of its own
    (accounts are never merged; the person's new account stays separate).
    """
    key = services.jpki_link_key
    added: dict[str, str] = {}
    count = 0
    for number, (old, new) in enumerate(pairs, start=1):
        where = f"pair {number} ({old:x} -> {new:x})"
        if old == new:
            raise ValueError(f"{where}: OLD and NEW are the same serial; nothing imported")
        old_digest, new_digest = serial_digest(key, old), serial_digest(key, new)
        if not (_bound(session, old_digest) or old_digest in added or session.get(JpkiLink, old_digest)):
            raise ValueError(f"{where}: no account was proven with JPKI serial {old:x} and no renewal "
                             "links to it; nothing imported")
        existing = added.get(new_digest)
        if existing is None:
            row = session.get(JpkiLink, new_digest)
            existing = row.old_serial_digest if row is not None else None
        if existing is not None and existing != old_digest:
            raise ValueError(f"{where}: JPKI serial {new:x} is already linked to another card; nothing imported")
        if existing is not None:
            continue  # recorded before: importing a file twice changes nothing
        new_account = _account_of(session, new_digest)
        if new_account is not None:
            if new_account == _account_of(session, old_digest):
                continue  # already joined (e.g. by a device co-signature)
            raise ValueError(f"{where}: JPKI serial {new:x} already proved an account of its own; "
                             "accounts are not merged; nothing imported")
        added[new_digest] = old_digest
        session.add(JpkiLink(new_serial_digest=new_digest, old_serial_digest=old_digest))
        count += 1
    if count:
        session.flush()
        audit.record(session, "jpki.linked", count=count)
    return f"linked {count} renewal(s)"


def _bound(session: Session, digest: str) -> bool:
    return _account_of(session, digest) is not None


def _account_of(session: Session, digest: str) -> str | None:
    return session.scalars(select(JpkiBinding.account_id).where(JpkiBinding.jpki_serial_digest == digest)).first()


def apply_jpki_revocations(session: Session, services) -> str:  # type: ignore[no-untyped-def]
    """Reload the JPKI CRLs and apply the revocation policy (module doc) to the accounts
    they concern. A missing, corrupt or untrusted CRL raises before anything changes."""
    if services.settings.jpki_crls is None:
        raise ValueError("IDP_JPKI_CRLS is not set: there are no JPKI CRLs to refresh")
    try:
        entries = services.jpki.reload_crls(services.settings.jpki_crls)
    except JpkiError as exc:
        raise ValueError(f"JPKI CRLs not loaded, nothing changed: {exc.description}") from None
    affected = suspended = 0
    for entry in entries:
        digest = serial_digest(services.jpki_link_key, entry.serial_number)
        binding = session.scalars(select(JpkiBinding).where(JpkiBinding.jpki_serial_digest == digest)).first()
        if binding is None or binding.revoked_at is not None:
            continue
        affected += 1
        binding.revoked_at = utcnow()
        binding.revocation_reason = entry.reason or "unspecified"
        account = session.get(Account, binding.account_id)
        latest = session.scalars(select(JpkiBinding).where(JpkiBinding.account_id == account.id)
                                 .order_by(JpkiBinding.verified_at.desc(), JpkiBinding.id.desc())).first()
        if latest is not None and latest.id == binding.id:  # the card behind the current attributes
            account.attributes_current = False
        audit.record(session, "jpki.revoked", account=account.id, binding=binding.id,
                     reason=binding.revocation_reason, attributes_current=account.attributes_current)
        if binding.revocation_reason in SUSPENDING_REASONS:
            for device in session.scalars(select(DeviceCertificate).where(
                    DeviceCertificate.jpki_binding_id == binding.id,
                    DeviceCertificate.state.in_(("active", "pending")))).all():
                suspended += lifecycle.suspend(session, device, reason="certificateHold",
                                               event="certificate.suspended", by="jpki-crl")
    lifecycle.current_crl(session, services.ca)
    return (f"applied {affected} JPKI revocation(s) from {len(entries)} CRL entries; "
            f"{suspended} device certificate(s) suspended")
