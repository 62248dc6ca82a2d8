"""TEST My Number Cards for the development demo: a browser has no card reader.

The demo wallet asks the server to play the card: the server signs the enrolment
binding string (PROTOCOL §3 step 2) with a test card issued by the TEST JPKI CA that
``idp init`` creates in development under ``keys/jpki-test/`` (and trusts in
development only). Each persona keeps its card in ``keys/jpki-test/cards/`` so enrolling
again (another browser, a "new phone") joins the same account. Nothing here is reachable
when the issuer is not localhost: the demo blueprint is not even registered.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask_babel import lazy_gettext

from idp.device import webauthn
from idp.proofing.demo_card import TestCard, TestJpkiCA
from idp.proofing.jpki import binding_message
from idp.settings import Settings


@dataclass(frozen=True)
class Persona:
    key: str
    name: str
    gender: str
    date_of_birth: str  # EYYYYMMDD: era digit, then the Gregorian date
    address: str
    prefecture: str
    municipality: str
    description: Any

    @property
    def birthdate(self) -> str:
        d = self.date_of_birth[1:]
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"


PERSONAS = {
    p.key: p for p in (
        Persona("taro", "前橋　太郎", "1", "319800101", "群馬県前橋市大手町二丁目１２番１号", "群馬県", "前橋市",
                lazy_gettext("An adult in his forties")),
        Persona("hanako", "高崎　花子", "2", "319500505", "群馬県高崎市高松町３５番地１", "群馬県", "高崎市",
                lazy_gettext("A senior, over 65")),
        Persona("sho", "桐生　翔", "1", "420100401", "群馬県桐生市織姫町１番１号", "群馬県", "桐生市",
                lazy_gettext("A teenager, under 18")),
    )
}


class DemoCardError(Exception):
    """The demo card cannot sign (no TEST JPKI CA, unknown enrolment, bad credential)."""


def test_ca_folder(settings: Settings) -> Path:
    return settings.keys_dir / "jpki-test"


def load_test_ca(settings: Settings) -> TestJpkiCA | None:
    folder = test_ca_folder(settings)
    if not (folder / "ca.pem").exists():
        return None
    return TestJpkiCA.load(folder)


def _issued_by(card: TestCard, ca: TestJpkiCA) -> bool:
    try:
        ca.certificate.public_key().verify(card.certificate.signature, card.certificate.tbs_certificate_bytes,
                                           padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def card_for(settings: Settings, persona: Persona) -> TestCard:
    """The persona's test card, issued once by the TEST JPKI CA and kept (0600) for later."""
    ca = load_test_ca(settings)
    if ca is None:
        raise DemoCardError("no TEST JPKI CA: run `idp init` with a localhost issuer")
    path = test_ca_folder(settings) / "cards" / f"{persona.key}.pem"
    if path.exists():
        data = path.read_bytes()
        certificate = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            card = TestCard(certificate, key)
            if _issued_by(card, ca) and certificate.not_valid_after_utc > certificate.not_valid_before_utc:
                return card
    card = ca.issue_card(name=persona.name, gender=persona.gender, date_of_birth=persona.date_of_birth,
                         address=persona.address, prefecture=persona.prefecture,
                         municipality=persona.municipality)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = card.certificate.public_bytes(serialization.Encoding.PEM) + card.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    temporary.replace(path)
    return card


def credential_spki(credential: Any) -> bytes:
    """SPKI DER of the new credential's public key, read from its attestation object."""
    from webauthn.helpers import parse_attestation_object

    try:
        encoded = credential["response"]["attestationObject"]
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        attested = parse_attestation_object(raw).auth_data.attested_credential_data
        return webauthn.cose_public_key_to_spki(attested.credential_public_key)
    except Exception as exc:  # any malformed input is the caller's error
        raise DemoCardError(f"cannot read the new credential's public key: {exc}") from None


def sign_enrollment(card: TestCard, challenge: bytes, spki_der: bytes) -> dict[str, Any]:
    """The ``jpki`` member of ``/enroll/finish``, as the card and its reader app would send it."""
    signature = card.sign(binding_message(challenge, spki_der))
    return {"certificate": base64.b64encode(card.certificate_der).decode("ascii"), "chain": [],
            "signature": base64.b64encode(signature).decode("ascii")}
