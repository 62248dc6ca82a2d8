"""What the trust service knows about where a device key lives (WebAuthn L3 §8, FIDO MDS3).

Trusted attestation roots come from three places:

* built in: Apple's WebAuthn root and Google's hardware attestation roots, which
  py_webauthn ships (``webauthn.helpers.known_root_certs``) and always applies to the
  ``apple`` and ``android-key`` formats;
* ``IDP_ATTESTATION_ROOTS``: the operator's PEM roots, for every format;
* ``IDP_FIDO_MDS``: a verified FIDO Metadata Service BLOB, whose statement for the
  authenticator's AAGUID adds that model's roots, its key protection and its status.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from idp.attestation.mds import MetadataService, ModelMetadata


@dataclass(frozen=True)
class AttestationTrust:
    """The roots and metadata an enrolment's attestation statement is judged against."""

    operator_roots: tuple[bytes, ...] = ()
    metadata: MetadataService | None = None

    def model(self, aaguid: bytes) -> ModelMetadata | None:
        return self.metadata.model(aaguid) if self.metadata is not None else None

    def roots_for(self, aaguid: bytes) -> list[bytes]:
        """PEM roots for a statement from the model ``aaguid``: the operator's plus its metadata's."""
        model = self.model(aaguid)
        return list(self.operator_roots) + list(model.roots_pem if model else ())


def load_trust(roots: Path | None, mds_blob: Path | None, mds_root: Path | None,
               mds_crls: Path | None) -> AttestationTrust:
    """Build the trust from settings; any unreadable input stops the server (ValueError)."""
    metadata = MetadataService.load(mds_blob, root=mds_root, crls=mds_crls) if mds_blob else None
    return AttestationTrust(operator_roots=tuple(read_pem_roots(roots)) if roots else (), metadata=metadata)


def read_pem_roots(path: Path) -> list[bytes]:
    """Every PEM certificate in a file or a folder's ``*.pem`` files, each checked to parse."""
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    pems: list[bytes] = []
    for file in files:
        data = file.read_bytes()
        for block in data.split(b"-----END CERTIFICATE-----"):
            if b"-----BEGIN CERTIFICATE-----" in block:
                pem = block[block.index(b"-----BEGIN CERTIFICATE-----"):] + b"-----END CERTIFICATE-----\n"
                x509.load_pem_x509_certificate(pem)  # refuse to start on a broken root
                pems.append(pem)
    if not pems:
        raise ValueError(f"IDP_ATTESTATION_ROOTS {path}: no PEM certificates found")
    return pems
