"""Whether an attestation statement shows a hardware-protected key (WebAuthn L3 §8).

py_webauthn verifies each format's signature and, for ``android-key`` and ``apple``,
the chain to Google's and Apple's roots; it does not check the attestation
certificate requirements of ``packed`` (§8.2.1), the AAGUID extension of ``packed``
and ``tpm`` (§8.2.1, §8.3.1), nor the Android key's security level (§8.4). Those rules
decide what the trust service certifies, so they live here, as pure functions over
the parsed statement.

``hardware`` is granted only when the statement chained to a trusted root AND:

* ``packed`` / ``tpm``: an x5c chain whose leaf meets §8.2.1 / §8.3.1 (the AAGUID
  extension, when present, equals the authenticator data's AAGUID);
* ``android-key``: attestation and Keymaster security level TEE or StrongBox;
* ``apple``: always (Apple anonymous attestation is made by the Secure Enclave).

A FIDO metadata statement saying the model protects keys only in software overrides
all of them (FIDO Metadata Statement §3.2 keyProtection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID
from pyasn1.codec.der.decoder import decode as der_decode
from pyasn1.type.univ import OctetString
from webauthn.helpers.asn1.android_key import KeyDescription
from webauthn.helpers.structs import AttestationObject

KeyProtection = Literal["hardware", "unverified"]
HARDWARE: KeyProtection = "hardware"
UNVERIFIED: KeyProtection = "unverified"

ID_FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
"""id-fido-gen-ce-aaguid (WebAuthn L3 §8.2.1): the AAGUID of the attested model."""
ANDROID_KEY_DESCRIPTION = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")
ANDROID_HARDWARE_LEVELS = frozenset({1, 2})  # SecurityLevel TrustedEnvironment, StrongBox
HARDWARE_FORMATS = frozenset({"packed", "tpm", "android-key", "apple"})
HARDWARE_KEY_PROTECTION = frozenset({"hardware", "tee", "secure_element"})
"""FIDO Registry §3.2 keyProtection values that mean the key never leaves hardware."""


class AttestationRefused(ValueError):
    """A statement that breaks a verification step of its format: the registration fails."""


def check_attestation_certificate(attestation: AttestationObject, aaguid: bytes) -> None:
    """The certificate rules of the packed (§8.2.1) and TPM (§8.3.1) verification procedures.

    Run for every ``packed`` statement with x5c and every ``tpm`` statement, whatever the
    roots: a statement breaking them is not a valid statement of its format (§8.2, §8.3
    "Verification procedure"), so the registration is refused rather than downgraded.
    """
    x5c = attestation.att_stmt.x5c or []
    if attestation.fmt not in ("packed", "tpm") or not x5c:
        return
    try:
        leaf = x509.load_der_x509_certificate(x5c[0])
    except ValueError as exc:
        raise AttestationRefused("attestation certificate is not DER X.509") from exc
    if attestation.fmt == "packed":
        _packed_requirements(leaf)
    _aaguid_extension_matches(leaf, aaguid)


def _packed_requirements(leaf: x509.Certificate) -> None:
    """WebAuthn L3 §8.2.1: v3; subject C, O, OU="Authenticator Attestation", CN; CA false."""
    if leaf.version is not x509.Version.v3:
        raise AttestationRefused("packed attestation certificate is not X.509 v3")
    subject = leaf.subject
    for oid, label in ((NameOID.COUNTRY_NAME, "C"), (NameOID.ORGANIZATION_NAME, "O"),
                       (NameOID.COMMON_NAME, "CN")):
        if not subject.get_attributes_for_oid(oid):
            raise AttestationRefused(f"packed attestation certificate subject has no {label}")
    units = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != ["Authenticator Attestation"]:
        raise AttestationRefused('packed attestation certificate subject OU is not "Authenticator Attestation"')
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise AttestationRefused("packed attestation certificate has no basicConstraints") from None
    if constraints.ca:
        raise AttestationRefused("packed attestation certificate is a CA certificate")


def _aaguid_extension_matches(leaf: x509.Certificate, aaguid: bytes) -> None:
    """§8.2.1 / §8.3.1: id-fido-gen-ce-aaguid, when present, is non-critical and equals the AAGUID."""
    try:
        extension = leaf.extensions.get_extension_for_oid(ID_FIDO_GEN_CE_AAGUID)
    except x509.ExtensionNotFound:
        return
    if extension.critical:
        raise AttestationRefused("the AAGUID extension of the attestation certificate is critical")
    raw = extension.value.value  # UnrecognizedExtension: the DER OCTET STRING wrapping the AAGUID
    try:
        inner, rest = der_decode(raw, asn1Spec=OctetString())
    except Exception as exc:  # pyasn1 raises its own error classes for any malformed input
        raise AttestationRefused("the AAGUID extension is not an OCTET STRING") from exc
    if rest or bytes(inner) != aaguid:
        raise AttestationRefused("the attestation certificate's AAGUID differs from the authenticator's")


def key_protection(attestation: AttestationObject, *, chained: bool,
                   metadata_key_protection: Sequence[str] | None) -> KeyProtection:
    """``hardware`` or ``unverified`` for a statement py_webauthn has already verified.

    ``chained``: the statement's x5c chained to a trusted root (built-in, operator, or
    FIDO metadata for this AAGUID). ``metadata_key_protection``: the model's
    keyProtection from FIDO metadata, or None when the model has no entry.
    """
    if not chained or attestation.fmt not in HARDWARE_FORMATS:
        return UNVERIFIED
    if metadata_key_protection is not None and not HARDWARE_KEY_PROTECTION & set(metadata_key_protection):
        return UNVERIFIED
    x5c = attestation.att_stmt.x5c or []
    if attestation.fmt in ("packed", "tpm"):
        return HARDWARE if x5c else UNVERIFIED  # packed without x5c is self attestation
    if attestation.fmt == "android-key":
        return HARDWARE if x5c and _android_hardware(x5c[0]) else UNVERIFIED
    return HARDWARE  # apple


def _android_hardware(leaf_der: bytes) -> bool:
    """Android Key Attestation: both the attestation and the key live in a TEE or StrongBox."""
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        raw = leaf.extensions.get_extension_for_oid(ANDROID_KEY_DESCRIPTION).value.value
        description, _ = der_decode(raw, asn1Spec=KeyDescription())
        levels = {int(description["attestationSecurityLevel"]), int(description["keymasterSecurityLevel"])}
    except Exception:  # any unreadable description is simply not proof of hardware
        return False
    return levels <= ANDROID_HARDWARE_LEVELS
