"""Validated deployment settings, read once from ``IDP_*`` variables (PROTOCOL §1).

The environment wins over an optional TOML config file named by ``IDP_CONFIG``.
A production issuer (anything but ``http://localhost``/``127.0.0.1``) must be https
and must come with a real secret: an identity provider that silently falls back to
development defaults is a vulnerability, not a convenience.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

DEFAULT_ISSUER = "http://localhost:8000"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SettingsError(ValueError):
    """A configuration value that the server refuses to start with."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"expected 0 or 1, got {value!r}")


@dataclass(frozen=True)
class Pkcs11Config:
    """The PKCS#11 token holding the CA and ID-token signing keys (``IDP_PKCS11_*``)."""

    module: str
    token: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    issuer: str
    database_url: str
    keys_dir: Path
    instance_dir: Path
    jpki_trust_anchors: Path
    jpki_crls: Path | None
    webauthn_origins: tuple[str, ...]
    registration_token: str | None
    allow_synced_keys: bool
    attestation_roots: Path | None
    rate_limit_per_minute: int
    allow_http_loopback: bool
    policy_file: Path | None = None
    rate_limit_storage: str = "memory://"
    redis_url: str | None = None
    metrics_token: str | None = None
    proxy_hops: int = 0
    secret_key: str | None = None
    # How often each instance re-reads the signing key schedule from the database (seconds).
    keys_refresh_seconds: int = 30
    # How a person reaches the operator (shown on the help page): a phone number, an e-mail
    # address or a web page, as the operator writes it.
    support_contact: str | None = None
    fido_mds: Path | None = None
    fido_mds_root: Path | None = None
    fido_mds_crls: Path | None = None
    trust_authority_jwks: Path | None = None
    pkcs11: Pkcs11Config | None = None
    testing: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def development(self) -> bool:
        """Development mode: the issuer is a loopback http URL (PROTOCOL §1 defaults)."""
        parts = urlsplit(self.issuer)
        return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS

    @property
    def rp_id(self) -> str:
        """WebAuthn RP ID: the issuer's host (PROTOCOL §1, WebAuthn L3 §5.1.3)."""
        return urlsplit(self.issuer).hostname or "localhost"

    @property
    def issuer_origin(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = dict(os.environ if env is None else env)
        config_file = env.get("IDP_CONFIG")
        if config_file:
            env = {**_read_config_file(Path(config_file)), **env}
        issuer = env.get("IDP_ISSUER", DEFAULT_ISSUER).rstrip("/")
        _check_issuer(issuer)
        keys_dir = Path(env.get("IDP_KEYS_DIR", "keys")).resolve()
        instance_dir = Path(env.get("IDP_INSTANCE_DIR", "instance")).resolve()
        dev = urlsplit(issuer).scheme == "http"
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
        origins = tuple(
            o.strip().rstrip("/") for o in env.get("IDP_WEBAUTHN_ORIGINS", origin).split(",") if o.strip()
        )
        try:
            rate = int(env.get("IDP_RATE_LIMIT_PER_MINUTE", "60"))
        except ValueError as exc:
            raise SettingsError("IDP_RATE_LIMIT_PER_MINUTE must be a whole number") from exc
        if rate < 0:
            raise SettingsError("IDP_RATE_LIMIT_PER_MINUTE must not be negative")
        values: dict[str, object] = dict(
            issuer=issuer,
            database_url=env.get("IDP_DATABASE_URL") or f"sqlite:///{instance_dir / 'idp.sqlite3'}",
            keys_dir=keys_dir,
            instance_dir=instance_dir,
            jpki_trust_anchors=Path(env.get("IDP_JPKI_TRUST_ANCHORS") or keys_dir / "jpki"),
            jpki_crls=Path(env["IDP_JPKI_CRLS"]) if env.get("IDP_JPKI_CRLS") else None,
            webauthn_origins=origins,
            registration_token=env.get("IDP_REGISTRATION_TOKEN") or None,
            allow_synced_keys=_named_flag(env, "IDP_ALLOW_SYNCED_KEYS", dev),
            attestation_roots=Path(env["IDP_ATTESTATION_ROOTS"]) if env.get("IDP_ATTESTATION_ROOTS") else None,
            rate_limit_per_minute=rate,
            allow_http_loopback=_named_flag(env, "IDP_ALLOW_HTTP_LOOPBACK", dev),
            policy_file=Path(env["IDP_POLICY_FILE"]) if env.get("IDP_POLICY_FILE") else None,
            # the instances of one deployment share the counters through IDP_REDIS_URL
            rate_limit_storage=env.get("IDP_RATE_LIMIT_STORAGE") or env.get("IDP_REDIS_URL") or "memory://",
            redis_url=env.get("IDP_REDIS_URL") or None,
            metrics_token=env.get("IDP_METRICS_TOKEN") or None,
            proxy_hops=_count(env, "IDP_PROXY_HOPS"),
            keys_refresh_seconds=_seconds(env, "IDP_KEYS_REFRESH_SECONDS", 30, 1, 60),
            secret_key=env.get("IDP_SECRET_KEY") or None,
            support_contact=(env.get("IDP_SUPPORT_CONTACT") or "").strip()[:300] or None,
            fido_mds=_path(env, "IDP_FIDO_MDS"),
            fido_mds_root=_path(env, "IDP_FIDO_MDS_ROOT"),
            fido_mds_crls=_path(env, "IDP_FIDO_MDS_CRLS"),
            pkcs11=_pkcs11(env),
            trust_authority_jwks=Path(env["IDP_TRUST_AUTHORITY_JWKS"]) if env.get("IDP_TRUST_AUTHORITY_JWKS")
            else None,
        )
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        _check_issuer(self.issuer)
        for origin in self.webauthn_origins:
            if origin.startswith("android:apk-key-hash:"):  # a native Android wallet (WebAuthn L3 §5.8.1)
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("https", "http") or not parts.netloc or parts.path:
                raise SettingsError(f"IDP_WEBAUTHN_ORIGINS: {origin!r} is not an origin")
            if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
                raise SettingsError(f"IDP_WEBAUTHN_ORIGINS: {origin!r} must be https")
        if not self.development and self.allow_http_loopback and not self.testing:
            raise SettingsError("IDP_ALLOW_HTTP_LOOPBACK=1 is for development issuers only")


def _pkcs11(env: Mapping[str, str]) -> Pkcs11Config | None:
    """IDP_PKCS11_MODULE, _TOKEN and _PIN (or _PIN_FILE): all or nothing, checked at start."""
    module = env.get("IDP_PKCS11_MODULE")
    if not module:
        for name in ("IDP_PKCS11_TOKEN", "IDP_PKCS11_PIN", "IDP_PKCS11_PIN_FILE"):
            if env.get(name):
                raise SettingsError(f"{name} is set but IDP_PKCS11_MODULE is not")
        return None
    token = env.get("IDP_PKCS11_TOKEN")
    if not token:
        raise SettingsError("IDP_PKCS11_MODULE needs IDP_PKCS11_TOKEN (the token label)")
    pin, pin_file = env.get("IDP_PKCS11_PIN"), env.get("IDP_PKCS11_PIN_FILE")
    if bool(pin) == bool(pin_file):
        raise SettingsError("IDP_PKCS11_MODULE needs exactly one of IDP_PKCS11_PIN and IDP_PKCS11_PIN_FILE")
    if pin_file:
        try:
            pin = Path(pin_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"IDP_PKCS11_PIN_FILE {pin_file}: {exc.strerror}") from None
        if not pin:
            raise SettingsError(f"IDP_PKCS11_PIN_FILE {pin_file} is empty")
    return Pkcs11Config(module=module, token=token, pin=pin or "")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    return Path(env[name]) if env.get(name) else None


def _seconds(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = env.get(name) or str(default)
    if not value.isdigit() or not low <= int(value) <= high:
        raise SettingsError(f"{name} must be a whole number of seconds from {low} to {high}")
    return int(value)


def _count(env: Mapping[str, str], name: str) -> int:
    value = env.get(name) or "0"
    if not value.isdigit() or int(value) > 5:
        raise SettingsError(f"{name} must be a whole number from 0 to 5")
    return int(value)


def _named_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    try:
        return _flag(env.get(name), default)
    except SettingsError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _check_issuer(issuer: str) -> None:
    """OIDC Discovery §3: the issuer is an https URL without query or fragment."""
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or not parts.hostname:
        raise SettingsError(f"IDP_ISSUER {issuer!r} must be a URL without query or fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return
    raise SettingsError(f"IDP_ISSUER {issuer!r} must use https (http only for localhost)")


def _read_config_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"IDP_CONFIG {path}: {exc}") from exc
    return {key: ("1" if value else "0") if isinstance(value, bool) else str(value)
            for key, value in data.items() if key.startswith("IDP_")}
