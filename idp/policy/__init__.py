"""Category policies (PROTOCOL §5): which claims an RP category may receive, what it needs.

The defaults live in ``default.toml``; an operator file (``IDP_POLICY_FILE``) overrides
any key of any category. A broken file stops the server at start, naming the line
(TOML syntax) or the key (meaning): a policy that half-loads would release the wrong
claims.

Assurance levels (``acr``, OIDC Core §2), lowest first as discovery lists them: a device
certificate login; the same with user verification (WebAuthn UV flag); the same with a
device key whose attestation proved hardware protection (a verified chain to a trusted
root, WebAuthn L3 §8). Outside development the ``financial`` category needs the
hardware level whatever the defaults say, and an operator file may not lower it; in
development it keeps the user-verified level, because a development browser's passkey
carries no attestation.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

CATEGORIES = ("municipal", "medical", "financial", "transport")
BASE_CLAIMS = frozenset({"name", "address", "birthdate", "gender", "verified_claims"})
AGE_OVER = re.compile(r"^age_over_(\d{1,2})$")
AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "private_key_jwt", "none"})
ACR_DEVICE = "urn:x-jp-digital-id:acr:device-certificate"
ACR_DEVICE_UV = "urn:x-jp-digital-id:acr:device-certificate-uv"
ACR_DEVICE_HARDWARE = "urn:x-jp-digital-id:acr:device-certificate-hardware"
ACR_ORDER = (ACR_DEVICE, ACR_DEVICE_UV, ACR_DEVICE_HARDWARE)
"""Lowest to highest assurance: the order of ``acr_values_supported`` in discovery."""
HARDWARE_CATEGORIES = ("financial",)
"""Categories that need ACR_DEVICE_HARDWARE outside development."""
DEFAULT_FILE = Path(__file__).with_name("default.toml")


class PolicyError(ValueError):
    """An operator policy file the server refuses to start with."""


@dataclass(frozen=True)
class CategoryPolicy:
    category: str
    claims: frozenset[str]
    acr: str
    token_endpoint_auth_methods: tuple[str, ...]
    require_par: bool
    require_pkce: bool
    access_token_lifetime: int
    refresh_tokens: bool
    refresh_token_lifetime: int
    require_dpop: bool = False
    dpop_nonce: bool = False

    def reached_by(self, acr: str | None) -> bool:
        """Whether a login that reached ``acr`` is strong enough for this category."""
        return acr_rank(acr) >= acr_rank(self.acr)

    @property
    def age_thresholds(self) -> tuple[int, ...]:
        return tuple(sorted(int(m.group(1)) for c in self.claims if (m := AGE_OVER.match(c))))

    def as_dict(self) -> dict[str, Any]:
        return {
            "claims": sorted(self.claims),
            "acr": self.acr,
            "token_endpoint_auth_methods": list(self.token_endpoint_auth_methods),
            "require_pkce": self.require_pkce,
            "require_par": self.require_par,
            "access_token_lifetime": self.access_token_lifetime,
            "refresh_tokens": self.refresh_tokens,
            "refresh_token_lifetime": self.refresh_token_lifetime,
            "require_dpop": self.require_dpop,
            "dpop_nonce": self.dpop_nonce,
        }


@dataclass(frozen=True)
class Policy:
    version: str
    categories: Mapping[str, CategoryPolicy]

    def __getitem__(self, category: str) -> CategoryPolicy:
        return self.categories[category]

    @property
    def all_claims(self) -> frozenset[str]:
        return frozenset().union(*(p.claims for p in self.categories.values()))

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "categories": {name: p.as_dict() for name, p in self.categories.items()}}


def reached_acr(*, user_verified: bool, hardware: bool) -> str:
    """The ``acr`` a device login reached: hardware counts only on top of user verification."""
    if not user_verified:
        return ACR_DEVICE
    return ACR_DEVICE_HARDWARE if hardware else ACR_DEVICE_UV


def acr_rank(acr: str | None) -> int:
    """Position in ACR_ORDER; -1 for anything this OP never issues."""
    return ACR_ORDER.index(acr) if acr in ACR_ORDER else -1


def load_policy(path: Path | None = None, *, development: bool = False) -> Policy:
    data = _read(DEFAULT_FILE)
    lowered: set[str] = set()
    if path is not None:
        override = _read(path)
        unknown = set(override) - {"version", "categories"}
        if unknown:
            raise PolicyError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
        data["version"] = override.get("version", data["version"])
        for name, values in (override.get("categories") or {}).items():
            if name not in CATEGORIES:
                raise PolicyError(f"{path}: unknown category [categories.{name}]")
            if not isinstance(values, dict):
                raise PolicyError(f"{path}: [categories.{name}] must be a table")
            data["categories"][name] = {**data["categories"][name], **values}
            if "acr" in values:
                lowered.add(name)
    if not development:
        _require_hardware(data, lowered, str(path))
    where = str(path or DEFAULT_FILE)
    categories = {name: _category(where, name, data["categories"][name]) for name in CATEGORIES}
    # The version that consents are bound to covers the content, so an edit without a
    # version bump still asks people again.
    digest = hashlib.sha256(json.dumps({k: v.as_dict() for k, v in categories.items()},
                                       sort_keys=True).encode()).hexdigest()[:12]
    return Policy(version=f"{data['version']}+{digest}", categories=categories)


def _require_hardware(data: dict[str, Any], from_file: set[str], where: str) -> None:
    """Outside development the HARDWARE_CATEGORIES need ACR_DEVICE_HARDWARE (PROTOCOL-level rule,
    see the module doc); an operator file asking for less is refused, not silently raised."""
    for name in HARDWARE_CATEGORIES:
        values = data["categories"][name]
        if acr_rank(values.get("acr")) >= acr_rank(ACR_DEVICE_HARDWARE):
            continue
        if name in from_file:
            raise PolicyError(f"{where}: categories.{name}.acr: must be {ACR_DEVICE_HARDWARE} "
                              "outside development")
        values["acr"] = ACR_DEVICE_HARDWARE


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _category(where: str, name: str, values: Mapping[str, Any]) -> CategoryPolicy:
    def fail(key: str, why: str) -> PolicyError:
        return PolicyError(f"{where}: categories.{name}.{key}: {why}")

    known = {"claims", "acr", "token_endpoint_auth_methods", "require_par", "require_pkce",
             "access_token_lifetime", "refresh_tokens", "refresh_token_lifetime", "require_dpop", "dpop_nonce"}
    for key in values:
        if key not in known:
            raise fail(key, "unknown key")
    claims = values.get("claims")
    if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
        raise fail("claims", "must be a list of claim names")
    for claim in claims:
        if claim not in BASE_CLAIMS and not AGE_OVER.match(claim):
            raise fail("claims", f"unknown claim {claim!r}")
    if "verified_claims" in claims and name != "financial":
        raise fail("claims", "verified_claims is for the financial category only")
    if values.get("acr") not in ACR_ORDER:
        raise fail("acr", f"must be one of {', '.join(ACR_ORDER)}")
    methods = values.get("token_endpoint_auth_methods")
    if (not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods)
            or not set(methods) <= AUTH_METHODS):
        raise fail("token_endpoint_auth_methods", f"must be a non-empty list from {sorted(AUTH_METHODS)}")
    for key in ("require_par", "require_pkce", "refresh_tokens", "require_dpop", "dpop_nonce"):
        if not isinstance(values.get(key), bool):
            raise fail(key, "must be true or false")
    for key in ("access_token_lifetime", "refresh_token_lifetime"):
        value = values.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 60 <= value <= 31_536_000:
            raise fail(key, "must be a number of seconds between 60 and 31536000")
    if values["access_token_lifetime"] > 86_400:
        raise fail("access_token_lifetime", "must be at most one day")
    return CategoryPolicy(
        category=name,
        claims=frozenset(claims),
        acr=values["acr"],
        token_endpoint_auth_methods=tuple(methods),
        require_par=values["require_par"],
        require_pkce=values["require_pkce"],
        access_token_lifetime=values["access_token_lifetime"],
        refresh_tokens=values["refresh_tokens"],
        refresh_token_lifetime=values["refresh_token_lifetime"],
        require_dpop=values["require_dpop"],
        dpop_nonce=values["dpop_nonce"],
    )
