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
from idp.storage.models import Account, DeviceCertificate, JpkiBinding, JpkiLink, utcnow

SUSPENDING_REASONS = frozenset({"keyCompromise", "cACompromise", "privilegeWithdrawn", "certificateHold",
                                "cessationOfOperation"})


def serial_digest(key: bytes, serial_number: int) -> str:
    return hmac.new(key, b"jpki-serial:" + format(serial_number, "x").encode(), hashlib.sha256).hexdigest()


def link_serials(session: Session, services, pairs: Iterable[tuple[int, int]]) -> str:  # type: ignore[no-untyped-def]
    """Record renewals (old → new). An unknown OLD serial is refused: nothing is changed."""
    count = 0
    for old, new in pairs:
        old_digest = serial_digest(services.jpki_link_key, old)
        new_digest = serial_digest(services.jpki_link_key, new)
        if session.scalars(select(JpkiBinding.id).where(JpkiBinding.jpki_serial_digest == old_digest)).first() is None:
            raise ValueError(f"no account was proven with JPKI serial {old:x}; nothing imported")
        existing = session.get(JpkiLink, new_digest)
        if existing is not None and existing.old_serial_digest != old_digest:
            raise ValueError(f"JPKI serial {new:x} is already linked to another card; nothing imported")
        if existing is None:
            session.add(JpkiLink(new_serial_digest=new_digest, old_serial_digest=old_digest))
            count += 1
    audit.record(session, "jpki.linked", count=count)
    return f"linked {count} renewal(s)"


def apply_jpki_revocations(session: Session, services) -> str:  # type: ignore[no-untyped-def]
    """Reload the JPKI CRLs and apply them to the accounts they concern."""
    if services.settings.jpki_crls is None:
        raise ValueError("IDP_JPKI_CRLS is not set")
    entries = services.jpki.reload_crls(services.settings.jpki_crls)
    affected = 0
    for entry in entries:
        digest = serial_digest(services.jpki_link_key, entry.serial_number)
        binding = session.scalars(select(JpkiBinding).where(JpkiBinding.jpki_serial_digest == digest)).first()
        if binding is None or binding.revoked_at is not None:
            continue
        affected += 1
        binding.revoked_at = utcnow()
        binding.revocation_reason = entry.reason or "unspecified"
        account = session.get(Account, binding.account_id)
        account.attributes_current = False
        audit.record(session, "jpki.revoked", account=account.id, binding=binding.id,
                     reason=binding.revocation_reason)
        if binding.revocation_reason in SUSPENDING_REASONS:
            for device in session.scalars(select(DeviceCertificate).where(
                    DeviceCertificate.jpki_binding_id == binding.id, DeviceCertificate.state == "active")):
                lifecycle.suspend(session, device, reason="certificateHold", event="certificate.suspended",
                                  by="jpki-crl")
    lifecycle.current_crl(session, services.ca)
    return f"applied {affected} JPKI revocation(s) from {len(entries)} CRL entries"
