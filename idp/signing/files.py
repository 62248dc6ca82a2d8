"""Private keys with the keys folder (``IDP_KEYS_DIR``): the backend without an HSM.

The CA key is ``ca/ca.key.pem`` (PKCS#8, mode 0600). ID-token signing keys live in the
database with their schedule, so that a key made by ``idp keys rotate`` on one machine
reaches every instance: each private JWK is sealed as a JWE (RFC 7516; A256KW key
wrapping, A256GCM content encryption, RFC 7518 §4.4, §5.3) under a wrapping key derived
with HKDF (RFC 5869) from the deployment's pairwise salt, a secret every instance's keys
folder already holds and must hold identically (the same ``sub`` for the same person).
The database alone therefore never yields a signing key; the keys folder is still needed.
The HKDF ``info`` keeps the derived key unrelated to any other use of the salt.

Earlier versions kept each signing key as ``signing/<kid>.json`` (a private JWK) named in
``signing/index.json``; those are read once, to import them (``adopt_signing_key``).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwe, jwk
from joserfc.errors import JoseError

from idp.ca.authority import CURVE, KEY_FILE
from idp.files import write_atomically
from idp.signing import SIGNING_ALGS, KeyBackend, KeyBackendError

SALT_FILE = "pairwise.salt"
WRAP_INFO = b"jp-digital-id signing-key wrapping v1"
WRAP_HEADER = {"alg": "A256KW", "enc": "A256GCM", "cty": "jwk+json"}


class FileKeyBackend(KeyBackend):
    def __init__(self, keys_dir: Path) -> None:
        self.signing_dir = keys_dir / "signing"
        self.salt_file = keys_dir / SALT_FILE
        self.ca_key_file = keys_dir / "ca" / KEY_FILE

    @cached_property
    def _wrapping_key(self) -> jwk.OctKey:
        try:
            secret = self.salt_file.read_bytes()
        except OSError as exc:
            raise KeyBackendError(f"{self.salt_file} (which unseals the signing keys) is unreadable: {exc.strerror}; "
                                  "run `idp init` or restore the keys folder") from None
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=WRAP_INFO).derive(secret)
        return jwk.OctKey.import_key(derived)

    def _seal(self, key: jwk.Key) -> str:
        return jwe.encrypt_compact(WRAP_HEADER, json.dumps(key.as_dict(private=True)).encode(), self._wrapping_key)

    def generate_signing_key(self, alg: str) -> tuple[jwk.Key, str | None]:
        if alg not in SIGNING_ALGS:
            raise KeyBackendError(f"unsupported signing algorithm {alg}")
        key: jwk.Key
        if alg == "ES256":
            key = jwk.ECKey.generate_key("P-256", auto_kid=True)
        else:
            key = jwk.RSAKey.generate_key(2048, auto_kid=True)
        return key, self._seal(key)

    def signing_key(self, kid: str, sealed: str | None) -> jwk.Key:
        if sealed is None:
            raise KeyBackendError(f"signing key {kid} lives in a PKCS#11 token, and IDP_PKCS11_MODULE is not set")
        try:
            plaintext = jwe.decrypt_compact(sealed, self._wrapping_key, algorithms=[WRAP_HEADER["alg"],
                                                                                    WRAP_HEADER["enc"]]).plaintext
            key = jwk.import_key(json.loads(plaintext or b""))
        except (JoseError, ValueError) as exc:
            raise KeyBackendError(f"cannot unseal signing key {kid} ({type(exc).__name__}): this keys folder's "
                                  f"{SALT_FILE} is not the one of the instance that made it") from None
        return _checked(key, kid)

    def adopt_signing_key(self, kid: str) -> tuple[jwk.Key, str | None]:
        try:
            key = jwk.import_key(json.loads((self.signing_dir / f"{kid}.json").read_text()))
        except (OSError, ValueError) as exc:
            raise KeyBackendError(f"unreadable signing key {kid} in {self.signing_dir}: {exc}") from exc
        key = _checked(key, kid)
        return key, self._seal(key)

    def delete_signing_key(self, kid: str) -> None:
        """The sealed key goes with its row; a key file of an earlier version goes here."""
        (self.signing_dir / f"{kid}.json").unlink(missing_ok=True)

    def generate_ca_key(self) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(CURVE)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self.ca_key_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.ca_key_file, pem, 0o600)
        return key

    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise KeyBackendError(f"unreadable CA key {self.ca_key_file}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyBackendError(f"{self.ca_key_file} is not an ECDSA private key")
        return key


def _checked(key: jwk.Key, kid: str) -> jwk.Key:
    """The key is private and ``kid`` is its RFC 7638 thumbprint, as every kid here is, so a
    sealed key or key file cannot stand in for another one."""
    if not key.is_private or key.kid != kid or key.thumbprint() != kid:
        raise KeyBackendError(f"the key found for {kid} is not that private key")
    return key
