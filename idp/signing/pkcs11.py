"""Private keys in a PKCS#11 token (an HSM; SoftHSM2 in tests), through python-pkcs11.

Keys are generated in the token as sensitive, non-extractable token objects (PKCS#11
v2.40 §4.9 CKA_SENSITIVE, CKA_EXTRACTABLE) and used there: the objects handed out are
`cryptography` private-key implementations whose ``sign`` asks the token, and whose
export methods refuse. The CA key is labelled ``idp-ca``; an ID-token signing key carries
its ``kid`` as CKA_ID and ``idp-sig-<kid>`` as label.

Mechanisms: ECDSA keys sign with CKM_ECDSA over a digest computed here (the mechanism
every token has; SoftHSM2 has no CKM_ECDSA_SHA256) and the raw r||s answer is DER-encoded
for X.509 (RFC 5758 §3.2) by `cryptography`; joserfc turns it back into r||s for JWS
(RFC 7518 §3.4). RSA keys sign with CKM_SHA256_RSA_PKCS (RS256) or CKM_SHA256_RSA_PKCS_PSS.

Process model: a forked child must initialise a PKCS#11 library again before using it
(PKCS#11 v2.40: a child inherits no usable sessions), and gunicorn forks its workers after the app is built, so the session is
opened per process, on first use, and shared by its threads under a lock (a session
must not run two operations at once).
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any, NoReturn

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from joserfc import jwk
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from idp.settings import Pkcs11Config
from idp.signing import SIGNING_ALGS, KeyBackend, KeyBackendError

CA_LABEL = "idp-ca"
P256_OID = "1.2.840.10045.3.1.7"  # secp256r1 (RFC 5480 §2.1.1.1)
RSA_BITS = 2048
_PRIVATE_TEMPLATE = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                     Attribute.EXTRACTABLE: False, Attribute.SIGN: True}
_PUBLIC_TEMPLATE = {Attribute.TOKEN: True, Attribute.VERIFY: True}
_LIBRARIES: dict[str, list[Any]] = {}  # module path -> [library, pid that initialised it]
_LIBRARIES_LOCK = threading.Lock()


def _library(module: str) -> Any:
    """The loaded PKCS#11 library, initialised in this process (again after a fork)."""
    with _LIBRARIES_LOCK:
        entry = _LIBRARIES.get(module)
        if entry is None:
            try:
                entry = _LIBRARIES[module] = [pkcs11.lib(module), os.getpid()]
            except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
                raise KeyBackendError(f"IDP_PKCS11_MODULE {module}: cannot load ({exc})") from exc
        elif entry[1] != os.getpid():  # a forked child: the parent's library state is void here
            entry[0].reinitialize()
            entry[1] = os.getpid()
        return entry[0]


class Token:
    """One logged-in session per process on the configured token."""

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config
        self.lock = threading.RLock()
        """Held for any use of the session: PKCS#11 sessions run one operation at a time."""
        self._pid = -1
        self._session: Any = None

    def session(self) -> Any:
        """The session of this process (opened and logged in on first use after a fork)."""
        with self.lock:
            if self._session is not None and self._pid == os.getpid():
                return self._session
            library = _library(self.config.module)
            try:
                token = library.get_token(token_label=self.config.token)
                try:
                    self._session = token.open(user_pin=self.config.pin, rw=True)
                except pkcs11.UserAlreadyLoggedIn:  # login is per application, shared by its sessions
                    self._session = token.open(rw=True)
            except pkcs11.NoSuchToken:
                raise KeyBackendError(f"IDP_PKCS11_TOKEN {self.config.token!r}: no such token") from None
            except pkcs11.PKCS11Error as exc:
                raise KeyBackendError(f"PKCS#11 token {self.config.token!r}: {type(exc).__name__}") from None
            self._pid = os.getpid()
            return self._session

    def sign(self, key_id: bytes, data: bytes, mechanism: Mechanism, mechanism_param: Any = None) -> bytes:
        with self.lock:
            try:
                key = self.session().get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
                return bytes(key.sign(data, mechanism=mechanism, mechanism_param=mechanism_param))
            except pkcs11.PKCS11Error as exc:
                self._session = None  # a lost session (token removed, HSM restarted) is reopened next time
                raise KeyBackendError(f"PKCS#11 signature failed: {type(exc).__name__}") from None


def _public_jwk(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> jwk.Key:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return jwk.ECKey.import_key(public)
    return jwk.RSAKey.import_key(public)


def _refuse_export() -> NoReturn:
    raise TypeError("this private key lives in the PKCS#11 token and is never exported")


class _TokenKey:
    """What every token key shares: it names a key inside the token, hands out only the public
    half, and is never exported or copied (a copy would be the same key, so it is itself)."""

    def __init__(self, token: Token, key_id: bytes, public: Any) -> None:
        self._token, self._id, self._public = token, key_id, public

    def public_key(self) -> Any:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def private_bytes(self, encoding: serialization.Encoding, format: serialization.PrivateFormat,
                      encryption_algorithm: serialization.KeySerializationEncryption) -> bytes:
        _refuse_export()

    def private_numbers(self) -> NoReturn:
        _refuse_export()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class TokenEcKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """A P-256 private key in the token, usable wherever `cryptography` takes one to sign."""

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA (SEC 1 §4.1.3) over the digest of ``data``; the DER ECDSA-Sig-Value."""
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("only ECDSA signatures")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, Prehashed):
            digest = data
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(data)
            digest = hasher.finalize()
        raw = self._token.sign(self._id, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("the token keys of this service only sign")


class TokenRsaKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA private key in the token: PKCS#1 v1.5 (RS256) or PSS (PS256) with SHA-256."""

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | Prehashed) -> bytes:
        if not isinstance(algorithm, hashes.SHA256):
            raise TypeError("the token signs RSA with SHA-256 only")
        if isinstance(padding_, padding.PKCS1v15):
            return self._token.sign(self._id, data, Mechanism.SHA256_RSA_PKCS)
        if isinstance(padding_, padding.PSS):  # PS256 (RFC 7518 §3.5): MGF1-SHA256, salt as long as the digest
            param = (Mechanism.SHA256, pkcs11.MGF.SHA256, algorithm.digest_size)
            return self._token.sign(self._id, data, Mechanism.SHA256_RSA_PKCS_PSS, param)
        raise TypeError("unsupported RSA padding")

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        raise TypeError("the token keys of this service only sign")


class Pkcs11KeyBackend(KeyBackend):
    def __init__(self, config: Pkcs11Config) -> None:
        self.token = Token(config)

    # ---- signing keys ----
    def generate_signing_key(self, alg: str) -> tuple[jwk.Key, str | None]:
        if alg not in SIGNING_ALGS:
            raise KeyBackendError(f"unsupported signing algorithm {alg}")
        temporary = b"new-" + secrets.token_bytes(8)
        with self.token.lock:
            session = self.token.session()
            public, private = self._generate(session, KeyType.EC if alg == "ES256" else KeyType.RSA, temporary,
                                             "idp-sig-new")
            kid = _public_jwk(self._public_key(public)).thumbprint()
            for obj in (public, private):  # named after the public key, as file keys are (RFC 7638)
                obj[Attribute.ID] = kid.encode()
                obj[Attribute.LABEL] = f"idp-sig-{kid}"
        return self.signing_key(kid, None), None  # the token every instance opens holds it

    def signing_key(self, kid: str, sealed: str | None) -> jwk.Key:
        if sealed is not None:
            raise KeyBackendError(f"signing key {kid} was sealed for a keys folder, not made in the PKCS#11 token")
        key_id = kid.encode()
        private = self._private(key_id)
        public = self._public(key_id)
        public_jwk = {**_public_jwk(public).as_dict(private=False), "kid": kid}
        if isinstance(public, ec.EllipticCurvePublicKey):
            return jwk.ECKey(TokenEcKey(self.token, key_id, public), public_jwk)
        return jwk.RSAKey(TokenRsaKey(self.token, key_id, public), public_jwk)  # type: ignore[arg-type]

    def adopt_signing_key(self, kid: str) -> tuple[jwk.Key, str | None]:
        return self.signing_key(kid, None), None

    def delete_signing_key(self, kid: str) -> None:
        with self.token.lock:
            for obj in self.token.session().get_objects({Attribute.ID: kid.encode()}):
                obj.destroy()

    # ---- the CA key ----
    def generate_ca_key(self) -> ec.EllipticCurvePrivateKey:
        with self.token.lock:
            session = self.token.session()
            if list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: CA_LABEL})):
                raise KeyBackendError(f"the token already holds a CA key ({CA_LABEL}); refusing to make another")
            self._generate(session, KeyType.EC, CA_LABEL.encode(), CA_LABEL)
        return self.ca_key()

    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        key_id = CA_LABEL.encode()
        self._private(key_id)
        public = self._public(key_id)
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise KeyBackendError(f"the token's {CA_LABEL} key is not an ECDSA key")
        return TokenEcKey(self.token, key_id, public)

    # ---- token objects ----
    def _generate(self, session: Any, key_type: KeyType, key_id: bytes, label: str) -> tuple[Any, Any]:
        """A key pair as token objects; the private half sensitive and never extractable."""
        try:
            if key_type == KeyType.EC:
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)}, local=True)
                return params.generate_keypair(store=True, id=key_id, label=label, public_template=_PUBLIC_TEMPLATE,
                                               private_template=_PRIVATE_TEMPLATE)
            return session.generate_keypair(KeyType.RSA, RSA_BITS, store=True, id=key_id, label=label,
                                            public_template=_PUBLIC_TEMPLATE, private_template=_PRIVATE_TEMPLATE)
        except pkcs11.PKCS11Error as exc:
            raise KeyBackendError(f"PKCS#11 key generation failed: {type(exc).__name__}") from None

    def _private(self, key_id: bytes) -> Any:
        """The private key object, refused unless it has never left the token (PKCS#11 v2.40
        §4.9: CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE), so a key once imported in the
        clear or exported is never used as if it were an HSM key."""
        with self.token.lock:
            try:
                key = self.token.session().get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
                raise KeyBackendError(f"no single private key {key_id.decode()!r} in the PKCS#11 token: "
                                      "run `idp init`") from None
            if not (key[Attribute.ALWAYS_SENSITIVE] and key[Attribute.NEVER_EXTRACTABLE]):
                raise KeyBackendError(f"the token's key {key_id.decode()!r} has been extractable or not "
                                      "sensitive: it is not an HSM-protected key")
            return key

    def _public(self, key_id: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        with self.token.lock:
            try:
                obj = self.token.session().get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
                raise KeyBackendError(f"no single public key {key_id.decode()!r} in the PKCS#11 token") from None
            return self._public_key(obj)

    @staticmethod
    def _public_key(obj: Any) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """A token public key object as a `cryptography` key (read from its attributes)."""
        if obj.key_type == KeyType.EC:
            key = serialization.load_der_public_key(encode_ec_public_key(obj))
        else:
            key = rsa.RSAPublicNumbers(int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big"),
                                       int.from_bytes(obj[Attribute.MODULUS], "big")).public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise KeyBackendError("unsupported public key type in the PKCS#11 token")
        return key
