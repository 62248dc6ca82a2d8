"""Private keys as files under ``IDP_KEYS_DIR`` (mode 0600): the development backend.

Layout: ``signing/<kid>.json`` (a private JWK) for each ID-token signing key and
``ca/ca.key.pem`` (PKCS#8) for the CA key. The files are unencrypted: protecting them is
the file system's job; a deployment that wants more uses the PKCS#11 backend.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwk

from idp.ca.authority import CURVE, KEY_FILE
from idp.files import write_atomically
from idp.signing import SIGNING_ALGS, KeyBackend, KeyBackendError


class FileKeyBackend(KeyBackend):
    def __init__(self, keys_dir: Path) -> None:
        self.signing_dir = keys_dir / "signing"
        self.ca_key_file = keys_dir / "ca" / KEY_FILE

    def generate_signing_key(self, alg: str) -> jwk.Key:
        if alg not in SIGNING_ALGS:
            raise KeyBackendError(f"unsupported signing algorithm {alg}")
        key: jwk.Key
        if alg == "ES256":
            key = jwk.ECKey.generate_key("P-256", auto_kid=True)
        else:
            key = jwk.RSAKey.generate_key(2048, auto_kid=True)
        write_atomically(self.signing_dir / f"{key.kid}.json", json.dumps(key.as_dict(private=True)).encode())
        return key

    def signing_key(self, kid: str) -> jwk.Key:
        try:
            key = jwk.import_key(json.loads((self.signing_dir / f"{kid}.json").read_text()))
        except (OSError, ValueError) as exc:
            raise KeyBackendError(f"unreadable signing key {kid} in {self.signing_dir}: {exc}") from exc
        if key.kid != kid or not key.is_private:
            raise KeyBackendError(f"the key file for {kid} does not hold that private key")
        return key

    def delete_signing_key(self, kid: str) -> None:
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
