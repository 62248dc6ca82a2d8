"""Where the trust service's private keys live: files (development) or a PKCS#11 token (HSM).

One interface for both backends, so the keystore, the CA, the OCSP responder and the
token endpoint never know which they have. Every key a backend hands out is an object
implementing `cryptography`'s private key interfaces (``ec.EllipticCurvePrivateKey``,
``rsa.RSAPrivateKey``): `cryptography`'s certificate, CRL and OCSP builders sign through
any such object (they call its ``sign``), and a JOSE key wraps the same object, so an
HSM key signs certificates and ID tokens without its private half ever leaving the
token and without a line of hand-made DER.

Signing keys are named by their ``kid`` (the RFC 7638 thumbprint of the public key); the
CA has one key. The schedule of the signing keys lives in the database (idp/keystore.py),
so a key one instance makes must be reachable from all: a token object every instance's
token holds, or (files) the private key sealed into its database row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwk

from idp.settings import Settings

SIGNING_ALGS = ("ES256", "RS256")
"""The ID-token signing algorithms the OP keeps a key for (one key per algorithm)."""


class KeyBackendError(RuntimeError):
    """Key material that is missing or unusable: the server refuses to start or sign."""


class KeyBackend(ABC):
    """Creates, finds and destroys private keys; never exports one."""

    @abstractmethod
    def generate_signing_key(self, alg: str) -> tuple[jwk.Key, str | None]:
        """A new key for ``alg`` (ES256: P-256, RS256: RSA-2048) whose ``kid`` is set, and what
        the database must keep so that every instance reaches its private half: the private
        JWK sealed for the deployment's keys folder (files), or None (a token object)."""

    @abstractmethod
    def signing_key(self, kid: str, sealed: str | None) -> jwk.Key:
        """The key with this ``kid``, able to sign, from what ``generate_signing_key`` gave."""

    @abstractmethod
    def adopt_signing_key(self, kid: str) -> tuple[jwk.Key, str | None]:
        """A key made by an earlier version (named in ``keys/signing/index.json``), as
        ``generate_signing_key`` would give it, for the schedule in the database."""

    @abstractmethod
    def delete_signing_key(self, kid: str) -> None:
        """Destroy a retired key (no error when it is already gone)."""

    @abstractmethod
    def generate_ca_key(self) -> ec.EllipticCurvePrivateKey:
        """A new P-256 key for the CA, replacing none: call only when there is no CA yet."""

    @abstractmethod
    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        """The CA's key."""


def key_backend(settings: Settings) -> KeyBackend:
    """The PKCS#11 token when ``IDP_PKCS11_MODULE`` is set, else files under ``IDP_KEYS_DIR``."""
    if settings.pkcs11 is not None:
        from idp.signing.pkcs11 import Pkcs11KeyBackend

        return Pkcs11KeyBackend(settings.pkcs11)
    from idp.signing.files import FileKeyBackend

    return FileKeyBackend(Path(settings.keys_dir))
