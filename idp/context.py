"""The per-process services an app instance runs on, built once at start-up.

Everything expensive (keys, CA, JPKI trust anchors and CRLs, policy) is parsed here
once, not per request; endpoints reach it through :func:`services`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from flask import current_app
from joserfc.jwk import KeySet

from idp.attestation import AttestationTrust, load_trust
from idp.clients.cache import ClientCache
from idp.ca.authority import CertificateAuthority
from idp.clients.software_statement import load_authority_keys
from idp.files import write_atomically
from idp.keystore import KeyStore
from idp.policy import Policy, load_policy
from idp.signing import key_backend
from idp.proofing.jpki import JpkiTrustStore
from idp.settings import Settings, SettingsError
from idp.storage.db import Database

TEST_JPKI_FOLDER = "jpki-test"
CA_NAME = "JP Digital ID Trust Service CA"
CA_ORGANIZATION = "JP Digital ID Trust Service"


@dataclass
class Services:
    settings: Settings
    db: Database
    keystore: KeyStore
    policy: Policy
    ca: CertificateAuthority
    jpki: JpkiTrustStore
    pairwise_salt: bytes
    jpki_link_key: bytes
    secret_key: str
    attestation: AttestationTrust
    authority_keys: KeySet | None = None  # the software-statement authority (RFC 7591 §2.3)
    clients: ClientCache = field(default_factory=ClientCache)  # for /authorize and /token only


def services() -> Services:
    return current_app.extensions["idp"]


def _secret_file(path: Path, create: bool, size: int = 32) -> bytes:
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{path} is missing: run `idp init`")
        write_atomically(path, secrets.token_bytes(size))
    data = path.read_bytes()
    if len(data) < 32:
        raise ValueError(f"{path} is too short to be a secret")
    return data


def initialise(settings: Settings, *, create_keys: bool = True) -> list[str]:
    """Create what an empty deployment needs (idempotent); returns what was created.

    The database comes before the signing keys, which live there (idp/keystore.py); the
    pairwise salt before them too, as the file backend seals them with a key derived from
    it. ``create_keys=False`` (``idp serve`` outside development) only imports the keys of
    an earlier version's ``keys/signing/index.json`` and otherwise refuses an empty schedule.
    """
    created: list[str] = []
    keys = settings.keys_dir
    keys.mkdir(parents=True, exist_ok=True)
    backend = key_backend(settings)
    for name in ("pairwise.salt", "jpki-link.key", "session.secret"):
        if not (keys / name).exists():
            _secret_file(keys / name, create=True)
            created.append(name)
    if not (keys / "ca" / "ca.cert.pem").exists():
        CertificateAuthority.create(CA_NAME, CA_ORGANIZATION, key=backend.generate_ca_key()).save(keys / "ca")
        created.append("trust-service CA key and certificate")
    if settings.development:
        created.extend(_development_jpki(settings))
    database = Database(settings.database_url)
    try:
        if database.upgrade():
            created.append("database schema (migrated to the newest revision)")
        store = KeyStore(database, backend)
        done = schedule_signing_keys(settings, store, create=create_keys)
        if done:
            created.append(done)
        elif not create_keys:
            store.check()  # an empty schedule, or keys this instance cannot reach: a refusal
    finally:
        database.dispose()
    return created


def schedule_signing_keys(settings: Settings, store: KeyStore, *, create: bool) -> str | None:
    """Fill an empty key schedule: import an earlier version's ``keys/signing/index.json``,
    else create keys when ``create``; what was done, or None."""
    return store.initialise(settings.keys_dir / "signing" / "index.json", create=create)


def _development_jpki(settings: Settings) -> list[str]:
    """A clearly marked TEST JPKI CA for the demo, in its own files under the keys folder.

    It is never copied into ``IDP_JPKI_TRUST_ANCHORS`` (an operator's input, PROTOCOL
    §7.6): :func:`jpki_trust` adds it to the trust store while the issuer is development.
    """
    from idp.proofing.demo_card import TestJpkiCA

    folder = development_jpki_folder(settings)
    if (folder / "ca.pem").exists():
        return []
    TestJpkiCA.create().save(folder)
    return ["TEST JPKI CA for the development demo (trusted in development only)"]


def development_jpki_folder(settings: Settings) -> Path:
    return settings.keys_dir / TEST_JPKI_FOLDER


def jpki_trust(settings: Settings) -> JpkiTrustStore:
    """The JPKI trust store: the operator's anchors, plus the TEST root in development only.

    With an https issuer nothing made for development is trusted (PROTOCOL §7.6): test
    cards (their policy OID) are refused, and the server refuses to start when the
    operator's anchors contain the TEST root this deployment made, wherever it was put.
    """
    anchors = settings.jpki_trust_anchors if settings.jpki_trust_anchors.exists() else None
    test_root = development_jpki_folder(settings) / "ca.pem"
    if settings.development:
        extra = [test_root] if test_root.exists() else []
        return JpkiTrustStore.from_paths(anchors, settings.jpki_crls, extra_anchors=extra, accept_test_cards=True)
    store = JpkiTrustStore.from_paths(anchors, settings.jpki_crls, accept_test_cards=False)
    if test_root.exists() and store.trusts(x509.load_pem_x509_certificate(test_root.read_bytes())):
        raise SettingsError(f"IDP_JPKI_TRUST_ANCHORS contains the TEST JPKI root of {test_root}: "
                            "it is trusted only with a development issuer; remove it")
    return store


def missing_for_serving(settings: Settings) -> list[str]:
    """What ``idp serve`` needs and only ``idp init`` creates (PROTOCOL §7.6), by name."""
    keys = settings.keys_dir
    missing = []
    ca_files = ("ca.cert.pem",) if settings.pkcs11 is not None else ("ca.key.pem", "ca.cert.pem")  # key in the token
    if not all((keys / "ca" / name).exists() for name in ca_files):
        missing.append(f"trust-service CA ({keys / 'ca'})")
    salt = "pairwise salt" if settings.pkcs11 is not None else "pairwise salt (it also unseals the signing keys)"
    for name, what in (("pairwise.salt", salt), ("jpki-link.key", "JPKI link key")):
        if not (keys / name).exists():
            missing.append(f"{what} ({keys / name})")
    if not settings.secret_key and not (keys / "session.secret").exists():
        missing.append(f"secret (IDP_SECRET_KEY or {keys / 'session.secret'})")
    return missing


def load_services(settings: Settings) -> Services:
    keys = settings.keys_dir
    secret = settings.secret_key or _secret_file(keys / "session.secret", create=False).hex()
    if not settings.development and len(secret) < 32:
        raise ValueError("IDP_SECRET_KEY must be at least 32 characters")
    backend = key_backend(settings)
    db = Database(settings.database_url)
    keystore = KeyStore(db, backend, settings.keys_refresh_seconds)
    try:
        keystore.check()  # this instance can sign now: the schedule is there and its keys are reachable
    except BaseException:
        db.dispose()
        raise
    return Services(
        settings=settings,
        db=db,
        keystore=keystore,
        policy=load_policy(settings.policy_file, development=settings.development),
        ca=CertificateAuthority.load(keys / "ca", backend.ca_key()),
        jpki=jpki_trust(settings),
        pairwise_salt=_secret_file(keys / "pairwise.salt", create=False),
        jpki_link_key=_secret_file(keys / "jpki-link.key", create=False),
        secret_key=secret,
        attestation=load_trust(settings.attestation_roots, settings.fido_mds, settings.fido_mds_root,
                               settings.fido_mds_crls),
        authority_keys=load_authority_keys(settings.trust_authority_jwks),
    )
