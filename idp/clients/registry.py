"""Registered relying parties: metadata validation (OIDC Registration 1.0 §2, RFC 7591) and the
authlib client model.

Registration refuses, with ``invalid_redirect_uri`` or ``invalid_client_metadata`` and a
reason, anything the category policy forbids or the pairwise rules cannot serve:
several redirect hosts without a ``sector_identifier_uri`` (OIDC Core §8.1), a
``sector_identifier_uri`` whose list misses a redirect URI, a fragment in a redirect
URI (RFC 6749 §3.1.2), a ``public`` subject type (every client here is pairwise).

RFC 7592: the registration access token reads (§2.1) and deletes (§2.3) the client. A
deleted client is kept, marked, for the audit trail and the disclosure log, but it no
longer exists for any protocol endpoint and its tokens are revoked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urldefrag, urlsplit

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from sqlalchemy.orm import Session

from idp.clients import fapi
from idp.clients.fetch import FetchError, check_url, fetch_json
from idp.errors import InvalidClientMetadata, InvalidRedirectUri
from idp.pairwise import native_without_sector, redirect_hosts, sector_identifier
from idp.policy import CATEGORIES, Policy
from idp.privacy import contains_individual_number
from idp.settings import LOOPBACK_HOSTS
from idp.storage.models import Client

log = logging.getLogger("idp.registration")

SIGNING_ALGS = ("ES256", "RS256")
# OIDC Registration 1.0 §2: "The default, if omitted, is RS256" (oidcc-idtoken-signature checks it).
# Still ES256 here only because tests/test_categories_privacy.py lists "ES256" as the one
# header alg shared by design; switch both together (conformance/README.md, "Known failure").
DEFAULT_ID_TOKEN_ALG = "RS256"  # OIDC Registration 1.0 §2: the default when a client names none
REQUEST_OBJECT_ALGS = ("ES256", "RS256", "PS256")
UNSIGNED_REQUEST_OBJECT = "none"  # OIDC Core §6.1: an unsigned request object is allowed
DELETED_MARK = "_deleted_at"
SCOPES = ("openid", "profile", "address", "email", "phone", "offline_access", "age")
URI_FIELDS = ("logo_uri", "client_uri", "policy_uri", "tos_uri", "initiate_login_uri")
STRING_FIELDS = ("client_name", "purpose", "software_id", "software_version")
RESPONSE_TYPES = ("code",)  # the authorization code flow only (OIDC Core §3.1)
GRANT_TYPES = ("authorization_code", "refresh_token")
MAX_STRING = 300
MAX_HOST_LENGTH = 253  # a DNS name (RFC 1035 §2.3.4); the sector column holds one


def default_id_token_alg(category: str) -> str:
    """OIDC Registration §2's RS256 default, except where FAPI 2.0 §5.4.1 forbids RS256."""
    return fapi.FINANCIAL_ID_TOKEN_ALG if fapi.applies(category) else DEFAULT_ID_TOKEN_ALG


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_client_id() -> str:
    """144 random bits in base64url, never starting with "-": operators pass client ids to
    ``idp clients …``, where a leading dash would read as an option."""
    while (value := secrets.token_urlsafe(18)).startswith("-"):
        continue
    return value


@dataclass
class RegisteredClient(ClientMixin):
    """authlib's view of a client; metadata is the validated registration document."""

    row: Client

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def deleted(self) -> bool:
        return DELETED_MARK in self.row.client_metadata

    @property
    def active(self) -> bool:
        """Neither deleted (RFC 7592 §2.3) nor disabled by the operator: only an active client
        exists for the protocol endpoints."""
        return not self.deleted and self.row.disabled_at is None

    @functools.cached_property
    def metadata(self) -> Mapping[str, Any]:
        return self.row.client_metadata

    @property
    def category(self) -> str:
        return self.row.rp_category

    @property
    def sector(self) -> str:
        return self.row.sector_identifier

    @property
    def name(self) -> str:
        return self.metadata.get("client_name") or self.client_id

    @property
    def id_token_signed_response_alg(self) -> str:
        """The registered alg, else the default (see DEFAULT_ID_TOKEN_ALG; ES256 for FAPI categories)."""
        return self.metadata.get("id_token_signed_response_alg", default_id_token_alg(self.category))

    @property
    def token_endpoint_auth_method(self) -> str:
        return self.metadata.get("token_endpoint_auth_method", "client_secret_basic")

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.metadata["redirect_uris"]
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        return list_to_scope([s for s in scope_to_list(scope) if s in SCOPES])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match, query included (OIDC Core §3.1.2.1, RFC 9700 §4.1.3)."""
        return redirect_uri in self.metadata["redirect_uris"]

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.client_secret
        return bool(stored) and hmac.compare_digest(stored, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.metadata.get("grant_types", ["authorization_code"])


def validate_metadata(body: Any, *, policy: Policy, allow_http_loopback: bool) -> dict[str, Any]:
    """The registration request checked and normalised, or a registration error."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("the registration request must be a JSON object")
    if contains_individual_number(body):
        raise InvalidClientMetadata("client metadata must not contain an individual number")
    meta: dict[str, Any] = {}
    category = body.get("rp_category")
    if category not in CATEGORIES:
        raise InvalidClientMetadata(f"rp_category is required and must be one of {', '.join(CATEGORIES)}")
    meta["rp_category"] = category
    rules = policy[category]

    application_type = body.get("application_type", "web")
    if application_type not in ("web", "native"):
        raise InvalidClientMetadata("application_type must be web or native")
    meta["application_type"] = application_type
    meta["redirect_uris"] = _redirect_uris(body.get("redirect_uris"), application_type, allow_http_loopback)

    meta["response_types"] = narrowed("response_types", body.get("response_types", ["code"]), RESPONSE_TYPES)
    grant_types = narrowed("grant_types", body.get("grant_types", ["authorization_code"]), GRANT_TYPES)
    if "authorization_code" not in grant_types:
        # RFC 7591 §2.1: response type "code" goes with the authorization_code grant type
        raise InvalidClientMetadata("grant_types must include authorization_code")
    if not rules.refresh_tokens:  # the category's policy narrows further (RFC 7591 §3.2.1)
        grant_types = [g for g in grant_types if g != "refresh_token"]
    meta["grant_types"] = grant_types

    method = body.get("token_endpoint_auth_method", rules.token_endpoint_auth_methods[0]
                      if "client_secret_basic" not in rules.token_endpoint_auth_methods else "client_secret_basic")
    if method not in rules.token_endpoint_auth_methods:
        raise InvalidClientMetadata(
            f"token_endpoint_auth_method {method!r} is not allowed for the {category} category "
            f"(allowed: {', '.join(rules.token_endpoint_auth_methods)})")
    meta["token_endpoint_auth_method"] = method

    _keys(body, meta, allow_http_loopback, method)
    _algorithms(body, meta)
    fapi.check_metadata(category, body, meta)
    _strings_and_uris(body, meta, allow_http_loopback)

    subject_type = body.get("subject_type", "pairwise")
    if subject_type != "pairwise":
        raise InvalidClientMetadata("subject_type must be pairwise: every client of this IdP gets pairwise subjects")
    meta["subject_type"] = "pairwise"

    sector_uri = body.get("sector_identifier_uri")
    if sector_uri is not None:
        meta["sector_identifier_uri"] = _check_sector_identifier_uri(
            sector_uri, meta["redirect_uris"], allow_http_loopback)
    elif native_without_sector(redirect_uris=meta["redirect_uris"], sector_identifier_uri=None,
                               application_type=meta["application_type"]):
        pass  # a sector of its own (PROTOCOL §7.2), whatever the loopback hosts or app schemes
    elif len(redirect_hosts(meta["redirect_uris"])) > 1:
        raise InvalidClientMetadata(
            "redirect_uris name several hosts: register a sector_identifier_uri (OIDC Core §8.1)")
    elif not all(urlsplit(uri).hostname for uri in meta["redirect_uris"]):
        raise InvalidClientMetadata(
            "a private-use redirect URI has no host to be a sector: register a sector_identifier_uri")

    for key in ("default_max_age",):
        if key in body:
            if not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 0:
                raise InvalidClientMetadata(f"{key} must be a non-negative integer")
            meta[key] = body[key]
    if "require_auth_time" in body:
        if not isinstance(body["require_auth_time"], bool):
            raise InvalidClientMetadata("require_auth_time must be a boolean")
        meta["require_auth_time"] = body["require_auth_time"]
    for key in ("default_acr_values", "contacts", "request_uris", "post_logout_redirect_uris"):
        if key in body:
            value = body[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= 2000 for v in value):
                raise InvalidClientMetadata(f"{key} must be a list of strings")
            meta[key] = value
    for uri in meta.get("post_logout_redirect_uris", []):
        _check_uri("post_logout_redirect_uris", uri, allow_http_loopback)
    for uri in meta.get("request_uris", []):
        # OIDC Core §6.2: the fragment may carry a hash of the content; the rest is fetched.
        _check_uri("request_uris", urldefrag(uri)[0], allow_http_loopback)
    if "backchannel_logout_uri" in body:
        # Back-Channel Logout 1.0 §2.2: absolute URI, no fragment; fetched like any RP URL.
        _check_uri("backchannel_logout_uri", body["backchannel_logout_uri"], allow_http_loopback)
        meta["backchannel_logout_uri"] = body["backchannel_logout_uri"]
        required = body.get("backchannel_logout_session_required", False)
        if not isinstance(required, bool):
            raise InvalidClientMetadata("backchannel_logout_session_required must be a boolean")
        meta["backchannel_logout_session_required"] = required
    elif "backchannel_logout_session_required" in body:
        raise InvalidClientMetadata("backchannel_logout_session_required needs a backchannel_logout_uri")
    return meta


def narrowed(field: str, value: Any, supported: tuple[str, ...]) -> list[str]:
    """RFC 7591 §3.2.1: the server may replace requested values with suitable ones and echoes
    what it registered. Unsupported values next to supported ones are dropped (a stock RP such
    as mod_auth_openidc asks for every response type its library knows); only a request with
    nothing supported left is refused."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadata(f"{field} must be a non-empty list of strings")
    kept = [v for v in dict.fromkeys(value) if v in supported]
    if not kept:
        raise InvalidClientMetadata(f"{field}: none of {', '.join(value)[:200]} is supported "
                                    f"(supported: {', '.join(supported)})")
    return kept


def _redirect_uris(value: Any, application_type: str, allow_http_loopback: bool) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidRedirectUri("redirect_uris must be a non-empty list of URIs")
    for uri in value:
        try:  # RFC 3986 §3.2.2: a bracketed host must be an IP literal; the port a number
            parts = urlsplit(uri)
            host, _port = parts.hostname, parts.port
        except ValueError:
            raise InvalidRedirectUri(f"redirect URI {uri[:200]!r} is not a valid URI") from None
        if host and len(host) > MAX_HOST_LENGTH:
            raise InvalidRedirectUri(f"redirect URI host is longer than {MAX_HOST_LENGTH} characters (RFC 1035 §2.3.4)")
        if parts.fragment or "#" in uri:
            raise InvalidRedirectUri(f"redirect URI {uri!r} must not contain a fragment (RFC 6749 §3.1.2)")
        if not parts.scheme or len(uri) > 2000:
            raise InvalidRedirectUri(f"redirect URI {uri!r} must be an absolute URI")
        loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
        if parts.scheme == "https" and parts.hostname:
            continue
        if loopback and (allow_http_loopback or application_type == "native"):
            continue
        if application_type == "native" and parts.scheme not in ("http", "https", "javascript", "data", "file"):
            continue  # private-use scheme (RFC 8252 §7.1)
        raise InvalidRedirectUri(f"redirect URI {uri!r} must use https")
    return list(dict.fromkeys(value))


def _check_uri(field: str, uri: Any, allow_http_loopback: bool) -> None:
    if not isinstance(uri, str):
        raise InvalidClientMetadata(f"{field} must be a URI")
    try:
        check_url(uri, allow_http_loopback=allow_http_loopback)
    except FetchError as exc:
        log.info("registration refused %s: %s", field, exc.detail)
        raise InvalidClientMetadata(f"{field} must be an https URL of a public host") from None


def _keys(body: Mapping[str, Any], meta: dict[str, Any], allow_http_loopback: bool, method: str) -> None:
    if "jwks" in body and "jwks_uri" in body:
        raise InvalidClientMetadata("jwks and jwks_uri must not both be present (OIDC Registration §2)")
    if "jwks" in body:
        jwks = body["jwks"]
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise InvalidClientMetadata("jwks must be a JWK Set")
        from joserfc.jwk import KeySet

        try:
            KeySet.import_key_set(jwks)
        except Exception as exc:  # joserfc raises several types for bad key material
            raise InvalidClientMetadata(f"jwks is not a valid JWK Set: {exc}") from None
        if any("d" in key for key in jwks["keys"] if isinstance(key, dict)):
            raise InvalidClientMetadata("jwks must contain public keys only")
        meta["jwks"] = jwks
    if "jwks_uri" in body:
        _check_uri("jwks_uri", body["jwks_uri"], allow_http_loopback)
        meta["jwks_uri"] = body["jwks_uri"]
    if method == "private_key_jwt" and not ("jwks" in meta or "jwks_uri" in meta):
        raise InvalidClientMetadata("private_key_jwt needs jwks or jwks_uri")


def _algorithms(body: Mapping[str, Any], meta: dict[str, Any]) -> None:
    for key, allowed in (("id_token_signed_response_alg", SIGNING_ALGS),
                         ("userinfo_signed_response_alg", SIGNING_ALGS),
                         ("request_object_signing_alg", REQUEST_OBJECT_ALGS + (UNSIGNED_REQUEST_OBJECT,)),
                         ("token_endpoint_auth_signing_alg", REQUEST_OBJECT_ALGS)):
        if key in body:
            if body[key] not in allowed:
                raise InvalidClientMetadata(f"{key} must be one of {', '.join(allowed)}")
            meta[key] = body[key]
    for key in ("id_token_encrypted_response_alg", "userinfo_encrypted_response_alg",
                "request_object_encryption_alg"):
        if key in body:
            raise InvalidClientMetadata(f"{key}: encryption is not supported")


def _strings_and_uris(body: Mapping[str, Any], meta: dict[str, Any], allow_http_loopback: bool) -> None:
    for key, value in body.items():
        base = key.split("#", 1)[0]
        if base in STRING_FIELDS:
            if not isinstance(value, str) or len(value) > MAX_STRING:
                raise InvalidClientMetadata(f"{key} must be a string of at most {MAX_STRING} characters")
            meta[key] = value
        elif base in URI_FIELDS:
            _check_uri(key, value, allow_http_loopback)
            meta[key] = value


def _check_sector_identifier_uri(uri: Any, redirect_uris: list[str], allow_http_loopback: bool) -> str:
    """OIDC Registration §5: the document is a JSON array listing every redirect URI."""
    if not isinstance(uri, str):
        raise InvalidClientMetadata("sector_identifier_uri must be a URI")
    _check_uri("sector_identifier_uri", uri, allow_http_loopback)
    try:
        listed = fetch_json(uri, allow_http_loopback=allow_http_loopback)
    except FetchError:
        raise InvalidClientMetadata("sector_identifier_uri could not be fetched") from None
    if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
        raise InvalidClientMetadata("sector_identifier_uri must return a JSON array of redirect URIs")
    missing = [u for u in redirect_uris if u not in listed]
    if missing:
        raise InvalidClientMetadata(f"sector_identifier_uri does not list redirect URI {missing[0]!r}")
    return uri


def create_client(session: Session, meta: dict[str, Any]) -> tuple[Client, dict[str, str]]:
    """Store a validated client; returns the row and the one-time secrets to hand back."""
    client_id = new_client_id()
    issued: dict[str, str] = {"registration_access_token": secrets.token_urlsafe(32)}
    secret_hash = None
    if meta["token_endpoint_auth_method"] in ("client_secret_basic", "client_secret_post"):
        issued["client_secret"] = secrets.token_urlsafe(32)
        secret_hash = digest(issued["client_secret"])
    row = Client(
        client_id=client_id,
        client_secret=secret_hash,
        client_id_issued_at=int(time.time()),
        rp_category=meta["rp_category"],
        sector_identifier=sector_identifier(redirect_uris=meta["redirect_uris"],
                                            sector_identifier_uri=meta.get("sector_identifier_uri"),
                                            application_type=meta.get("application_type"), client_id=client_id),
        registration_access_token_hash=digest(issued["registration_access_token"]),
        client_metadata=meta,
    )
    session.add(row)
    session.flush()
    return row, issued


def delete_client(session: Session, row: Client) -> None:
    """RFC 7592 §2.3: the client_id, secret and registration token stop working; its tokens
    are revoked. The row stays (marked) so the audit trail and disclosure log keep their subject."""
    from idp.oidc.token_family import revoke_tokens

    row.client_metadata = {**row.client_metadata, DELETED_MARK: int(time.time())}
    row.client_secret = None
    row.registration_access_token_hash = ""
    revoke_tokens(session, client_id=row.client_id)


def disable_client(session: Session, row: Client) -> int:
    """The operator ends a client (`idp clients disable`): it can no longer authenticate or start a
    login, and every token it holds is revoked by one UPDATE, effective at once. Returns the
    number of tokens revoked. Unlike an RFC 7592 delete, the registration stays readable."""
    from idp.oidc.token_family import revoke_tokens
    from idp.storage.models import utcnow

    row.disabled_at = row.disabled_at or utcnow()
    return revoke_tokens(session, client_id=row.client_id)


def client_status(row: Client) -> str:
    if DELETED_MARK in row.client_metadata:
        return "deleted"
    return "disabled" if row.disabled_at is not None else "active"


def client_information(row: Client, registration_client_uri: str) -> dict[str, Any]:
    """RFC 7591 §3.2.1 / RFC 7592 §3: the metadata as registered, never the stored secret hash."""
    info = {k: v for k, v in row.client_metadata.items() if not k.startswith("_")}
    info.setdefault("id_token_signed_response_alg", default_id_token_alg(row.rp_category))  # effective (§3.2)
    info.update(client_id=row.client_id, client_id_issued_at=row.client_id_issued_at,
                registration_client_uri=registration_client_uri)
    if row.client_secret:
        info["client_secret_expires_at"] = 0
    return info
