"""The authlib authorization server, assembled by registration (OIDC Core §3.1, RFC 6749).

authlib owns the grant logic: authorization-request validation, PKCE (RFC 7636), the
code and refresh-token grants, client authentication (client_secret_basic/post, none,
private_key_jwt per RFC 7523 §2.2), revocation (RFC 7009) and introspection (RFC 7662).
This module supplies storage, the pairwise ID token and the category policy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    InvalidClientError,
    InvalidRequestError,
    OAuth2Request,
    TokenMixin,
    grants,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.util import create_half_hash
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from flask import Flask, g
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Row, and_, bindparam, or_, select, update

from idp import audit
from idp.clients import cache as client_cache
from idp.clients import fapi
from idp.clients.keys import ClientKeyError, client_key_resolver
from idp.clients.registry import REQUEST_OBJECT_ALGS, RegisteredClient
from idp.context import services
from idp.oidc import claims as claims_mod
from idp.oidc import dpop
from idp.oidc.session import current_db
from idp.oidc.token_family import revoke_tokens
from idp.ops import metrics
from idp.storage.models import Account, AuthorizationTransaction, Client, Consent, Token, utcnow
from idp.storage.rows import insert_row
from idp.storage.single_use import compare_and_set

ID_TOKEN_LIFETIME = 3600
CODE_LIFETIME = 60
# A client assertion living longer than this is not remembered longer (a year-long
# assertion is a client bug; keeping its jti a year serves nobody).
MAX_JTI_MEMORY_SECONDS = 366 * 24 * 3600
AUTHORIZATION_CODE_BYTES = 36  # 288 random bits, 48 base64url characters (RFC 6749 §10.10)
# The key under which a transaction's stored request keeps what validating it learned.
CHECKED_MARK = "_checked"


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


@dataclass
class AuthorizedUser:
    """The person behind a code or token, with how they authenticated (for the ID token).

    The account row is read only when something needs its attributes (claims in the ID
    token): a login whose ID token carries none needs only the account id."""

    account_id: str
    auth_time: int
    acr: str
    amr: list[str]
    session_id: str | None
    claims_request: dict[str, Any] | None
    nonce: str | None = None
    device_serial: str | None = None  # the device certificate that logged in (its token family)
    extra: dict[str, Any] = field(default_factory=dict)
    known_account: Account | None = field(default=None, repr=False)

    @property
    def account(self) -> Account:
        if self.known_account is None:
            self.known_account = current_db().get(Account, self.account_id)
        return self.known_account


@dataclass
class StoredCode(AuthorizationCodeMixin):
    row: SpentCode

    @property
    def code_challenge(self) -> str | None:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str | None:
        return self.row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return self.row.auth_time

    def get_acr(self) -> str:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return self.row.amr


@dataclass
class StoredToken(TokenMixin):
    row: Token

    def check_client(self, client: RegisteredClient) -> bool:
        return self.row.client_id == client.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return self.row.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.row.issued_at + self.row.expires_in

    def is_refresh_expired(self) -> bool:
        return self.row.refresh_expires_at is not None and time.time() >= self.row.refresh_expires_at

    def is_revoked(self) -> bool:
        return self.row.revoked

    def get_user(self) -> Account:
        return current_db().get(Account, self.row.account_id)

    def get_client(self) -> RegisteredClient:
        return RegisteredClient(current_db().get(Client, self.row.client_id))


def user_from(row: Row[Any] | Token) -> AuthorizedUser:
    return AuthorizedUser(account_id=row.account_id, auth_time=row.auth_time, acr=row.acr, amr=list(row.amr),
                          session_id=row.session_id, claims_request=row.claims,
                          nonce=getattr(row, "nonce", None), device_serial=row.device_serial)


def query_client(client_id: str) -> RegisteredClient | None:
    if not isinstance(client_id, str) or len(client_id) > 64:
        return None
    memo: dict[str, RegisteredClient | None] = g.setdefault("registered_clients", {})
    if client_id not in memo:
        row = client_cache.cached(client_id)
        if row is not None:
            memo[client_id] = RegisteredClient(row)
        else:
            remember_client(client_id, current_db().connection().execute(_CLIENT_BY_ID, {"client_id": client_id}).first())
    client = memo[client_id]
    return client if client is not None and client.active else None


def remember_client(client_id: str, row: Client | Row[Any] | None) -> None:
    """Keep a client row read in this request (alone, or joined to what the request loads
    first), and in this process's cache (idp/clients/cache.py)."""
    memo: dict[str, RegisteredClient | None] = g.setdefault("registered_clients", {})
    memo[client_id] = RegisteredClient(row) if row is not None else None  # type: ignore[arg-type]
    if row is not None:
        client_cache.keep(row)


# A client is read fresh on every request, except at /authorize and /token, whose outcome is a
# write that checks the cached client is still current (idp/clients/cache.py); as a plain row.
_CLIENT_BY_ID = select(Client.__table__).where(Client.__table__.c.client_id == bindparam("client_id"))


def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
    user: AuthorizedUser = request.user
    client: RegisteredClient = request.client
    rules = services().policy[client.category]
    code: StoredCode | None = request.authorization_code
    old: StoredToken | None = getattr(request, "refresh_token", None)
    insert_row(
        current_db(), Token,
        access_token_hash=token_hash(token["access_token"]),
        refresh_token_hash=token_hash(token["refresh_token"]) if token.get("refresh_token") else None,
        client_id=client.client_id,
        account_id=user.account_id,
        scope=token.get("scope", ""),
        claims=user.claims_request,
        # a rotated refresh token stays in its family
        code_hash=old.row.code_hash if old is not None else code.row.code_hash if code else None,
        session_id=user.session_id,
        device_serial=old.row.device_serial if old is not None else user.device_serial,
        auth_time=user.auth_time,
        acr=user.acr,
        amr=user.amr,
        issued_at=int(time.time()),
        expires_in=token["expires_in"],
        refresh_expires_at=int(time.time()) + rules.refresh_token_lifetime if token.get("refresh_token") else None,
        dpop_jkt=getattr(request, "dpop_jkt", None),
    )
    metrics.token_issued(client.category)


class DPoPProofError(OAuth2Error):
    """RFC 9449 §5, §8: ``invalid_dpop_proof`` or ``use_dpop_nonce`` at the token endpoint (400)."""

    status_code = 400


def bind_to_proof(request: OAuth2Request, *, bound_to: str | None) -> None:
    """Verify the token request's DPoP proof and remember its key for the tokens (RFC 9449 §5).

    A proof is required when the category policy or the client's ``dpop_bound_access_tokens``
    says so, or when the code or refresh token is already bound (``bound_to``); then its key
    must be that key. Without a requirement a client that sends a proof still gets bound tokens.
    """
    client: RegisteredClient = request.client
    rules = services().policy[client.category]
    try:
        proof = dpop.proof_of_request("/token", require_nonce=rules.dpop_nonce)
    except dpop.DPoPError as exc:
        raise DPoPProofError(description=safe_text(exc.description), error=exc.error) from None
    required = rules.require_dpop or client.metadata.get("dpop_bound_access_tokens") is True
    if proof is None and (required or bound_to):
        raise DPoPProofError(description="this token request needs a DPoP proof (RFC 9449)",
                             error="invalid_dpop_proof")
    if bound_to and proof is not None and not hmac.compare_digest(proof.jkt, bound_to):
        raise DPoPProofError(description="the DPoP proof key is not the key this grant is bound to",
                             error="invalid_dpop_proof")
    request.dpop_jkt = proof.jkt if proof else None


def with_token_type(token: dict[str, Any], request: OAuth2Request) -> dict[str, Any]:
    """RFC 9449 §5.1: a DPoP-bound access token has ``token_type`` DPoP."""
    if getattr(request, "dpop_jkt", None):
        token["token_type"] = "DPoP"
    return token


def new_code(user: AuthorizedUser) -> tuple[str, dict[str, Any]]:
    """A fresh authorization code and what keeps it on its transaction (whose completing
    compare-and-set writes them): its digest only, its expiry and the per-client ``sid``.
    What the token request must match (RFC 6749 §4.1.3: the redirect_uri as sent; RFC 7636
    §4.6: the PKCE challenge; RFC 9449 §10: ``dpop_jkt``) and what the ID token says are the
    transaction's stored request and login (:class:`SpentCode`)."""
    code = secrets.token_urlsafe(AUTHORIZATION_CODE_BYTES)
    return code, {"code_hash": token_hash(code), "code_expires_at": utcnow() + timedelta(seconds=CODE_LIFETIME),
                  "code_session_id": user.session_id}


@dataclass(frozen=True)
class SpentCode:
    """An authorization code as its exchange reads it, from the transaction it ended."""

    code_hash: str
    client_id: str
    account_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    claims: dict[str, Any] | None
    session_id: str | None
    device_serial: str | None
    auth_time: int
    acr: str
    amr: list[str]
    dpop_jkt: str | None

    @classmethod
    def of(cls, row: Row[Any]) -> SpentCode:
        request: dict[str, Any] = row.request
        checked = request.get(CHECKED_MARK) or {}
        return cls(code_hash=row.code_hash, client_id=row.client_id, account_id=row.account_id,
                   redirect_uri=request.get("redirect_uri") or "", scope=request.get("scope") or "",
                   nonce=request.get("nonce"), code_challenge=request.get("code_challenge"),
                   code_challenge_method=request.get("code_challenge_method"), claims=checked.get("claims"),
                   session_id=row.code_session_id, device_serial=row.device_serial, auth_time=row.auth_time,
                   acr=row.acr, amr=list(row.amr or []), dpop_jkt=request.get("dpop_jkt"))


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_authorization_code(self, code: str, client: RegisteredClient) -> StoredCode | None:
        """The code is spent here, in one compare-and-set, so exactly one of any number of
        concurrent exchanges gets it; a reused code is refused and every token issued from
        it revoked (RFC 6749 §4.1.2). A later failure of this request rolls the spending back."""
        session = current_db()
        digest = token_hash(code)
        now = utcnow()
        # a compare-and-set that reads the row
        revision = client_cache.guard(client.client_id)
        params = {"digest": digest, "b_client_id": client.client_id, "now": now}
        if revision is None:
            spent = session.connection().execute(_SPEND_CODE, params).first()
        else:  # the client came from this process's cache: spent only while it is current
            spent = session.connection().execute(_SPEND_CODE_CONFIRMING, {
                **params, "guard_client": client.client_id, "guard_revision": revision}).first()
            client_cache.confirmed(spent is not None)
        if spent is not None:
            return StoredCode(SpentCode.of(spent))
        used = session.connection().execute(_USED_CODE, {"digest": digest}).first()
        if used is not None and used.client_id == client.client_id and used.code_used_at is not None:
            revoke_tokens(session, family=digest)
            g.commit_despite_error = True
        return None

    def validate_token_request(self) -> None:
        """RFC 6749 §4.1.3, then the DPoP proof; a code bound by ``dpop_jkt`` needs that key
        (RFC 9449 §10)."""
        super().validate_token_request()
        bind_to_proof(self.request, bound_to=self.request.authorization_code.row.dpop_jkt)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing left to do: :meth:`query_authorization_code` spent the code."""

    def authenticate_user(self, authorization_code: StoredCode) -> AuthorizedUser:
        return user_from(authorization_code.row)

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=True):  # type: ignore[no-untyped-def]
        """Refresh tokens only for ``offline_access`` (OIDC Core §11) and clients allowed them."""
        wants_offline = "offline_access" in (scope_to_list(scope or "") or [])
        token = super().generate_token(user=user, scope=scope, grant_type=grant_type, expires_in=expires_in,
                                       include_refresh_token=include_refresh_token and wants_offline)
        return with_token_type(token, self.request)


_TXN = AuthorizationTransaction.__table__.c
# The spent code comes back as a plain row (read only from here on: the ID token and the token row)
_SPEND_CODE = (update(AuthorizationTransaction.__table__)
               .where(_TXN.code_hash == bindparam("digest"), _TXN.client_id == bindparam("b_client_id"),
                      _TXN.code_used_at.is_(None), _TXN.code_expires_at > bindparam("now"))
               .values(code_used_at=bindparam("now"))
               .returning(_TXN.code_hash, _TXN.client_id, _TXN.account_id, _TXN.request, _TXN.code_session_id,
                          _TXN.device_serial, _TXN.auth_time, _TXN.acr, _TXN.amr))
_USED_CODE = select(_TXN.client_id, _TXN.code_used_at).where(_TXN.code_hash == bindparam("digest"))
_SPEND_CODE_CONFIRMING = _SPEND_CODE.where(client_cache.current())


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Rotating refresh tokens bound to their client (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AuthorizationCodeGrant.TOKEN_ENDPOINT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def validate_token_request(self) -> None:
        """RFC 6749 §6, then the DPoP proof. A public client's refresh token is bound to the key
        its first tokens were bound to; a confidential client's is bound by its authentication
        and may move to a new key (RFC 9449 §5)."""
        super().validate_token_request()
        old: StoredToken = self.request.refresh_token
        public = self.request.client.token_endpoint_auth_method == "none"
        bind_to_proof(self.request, bound_to=old.row.dpop_jkt if public else None)

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=True):  # type: ignore[no-untyped-def]
        token = super().generate_token(user=user, scope=scope, grant_type=grant_type, expires_in=expires_in,
                                       include_refresh_token=include_refresh_token)
        return with_token_type(token, self.request)

    def authenticate_refresh_token(self, refresh_token: str) -> StoredToken | None:
        """Rotation in one compare-and-set: exactly one concurrent use gets the token. A
        refresh token presented again after rotation (or after revocation) revokes its whole
        family, since the server cannot tell the legitimate client from a thief (RFC 9700
        §4.14.2)."""
        session = current_db()
        digest = token_hash(refresh_token)
        live = or_(Token.refresh_expires_at.is_(None), Token.refresh_expires_at > int(time.time()))
        if compare_and_set(session, Token, Token.refresh_token_hash == digest, Token.revoked.is_(False), live,
                           revoked=True):
            return StoredToken(session.scalars(select(Token).where(Token.refresh_token_hash == digest)).one())
        row = session.scalars(select(Token).where(Token.refresh_token_hash == digest)
                              .execution_options(populate_existing=True)).first()
        if row is not None and row.revoked:
            if row.code_hash is not None:
                revoke_tokens(session, family=row.code_hash)
            audit.record(session, "token.refresh_reused", client=row.client_id, account=row.account_id)
            g.commit_despite_error = True
        return None

    def authenticate_user(self, refresh_token: StoredToken) -> AuthorizedUser | None:
        from idp.consent import consent_active

        user = user_from(refresh_token.row)
        if not consent_active(current_db(), user.account_id, refresh_token.row.client_id):
            return None
        return user

    def revoke_old_credential(self, refresh_token: StoredToken) -> None:
        """Nothing left to do: :meth:`authenticate_refresh_token` revoked the old token."""


class PrivateKeyJWT(JWTBearerClientAssertion):
    """private_key_jwt (OIDC Core §9): ``aud`` may be the issuer or the URL of the endpoint
    it is sent to; signed with one of ``token_endpoint_auth_signing_alg_values_supported``
    (ES256, RS256, PS256), or exactly the client's registered ``token_endpoint_auth_signing_alg``."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def get_audiences(self) -> list[str]:
        settings = services().settings
        return [settings.issuer, *(settings.url(path) for path in ("/token", "/par", "/revoke", "/introspect"))]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(REQUEST_OBJECT_ALGS))
        except JoseError as exc:
            raise InvalidClientError(description=safe_text(exc.description or exc.error)) from None
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """RFC 7523 §3 item 7: a ``jti`` is used once; it is remembered until the assertion's
        own ``exp`` (plus the clock leeway it is accepted with), however long that is."""
        from idp.oidc.replay import remember_until

        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return False
        until = min(float(exp) + self.leeway, time.time() + MAX_JTI_MEMORY_SECONDS)
        return remember_until("jti", str(claims["sub"]), str(jti),
                              expires_at=datetime.fromtimestamp(until, timezone.utc))

    def resolve_client_public_key(self, client: RegisteredClient):  # type: ignore[no-untyped-def]
        resolve = client_key_resolver(client)
        registered = client.metadata.get("token_endpoint_auth_signing_alg")

        def checked(token: Any) -> Any:
            alg = token.headers().get("alg")
            if registered and alg != registered:
                raise ClientKeyError(f"this client registered token_endpoint_auth_signing_alg {registered}")
            if alg not in fapi.allowed_algs(client.category, REQUEST_OBJECT_ALGS):
                raise ClientKeyError(f"{client.category} client assertions use ES256 or PS256 (FAPI 2.0 5.4.1)")
            return resolve(token)

        return checked


def safe_text(text: str) -> str:
    """An error description within RFC 6749 §5.2's character set."""
    return "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "?" for ch in str(text))[:300]


class OpenIDConnectCode(OpenIDCode):
    """ID tokens (OIDC Core §2, §3.1.3.6) signed with the client's chosen algorithm."""

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False  # a nonce binds the ID token to the RP's session; the RP checks replay

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        user: AuthorizedUser = request.user
        client: RegisteredClient = request.client
        return build_id_token(client=client, user=user, access_token=token.get("access_token"))

    def generate_user_info(self, user: AuthorizedUser, scope: str) -> dict[str, Any]:
        return {}


def build_id_token(*, client: RegisteredClient, user: AuthorizedUser, access_token: str | None) -> str:
    svc = services()
    entry = svc.keystore.signing_key(client.id_token_signed_response_alg)
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": svc.settings.issuer,
        "sub": claims_mod.subject(user.account_id, client.sector, svc.pairwise_salt),
        "aud": client.client_id,
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "auth_time": user.auth_time,
        "acr": user.acr,
        "amr": user.amr,
    }
    if user.nonce:
        payload["nonce"] = user.nonce
    if user.session_id:
        payload["sid"] = user.session_id
    if access_token:
        payload["at_hash"] = create_half_hash(access_token, entry.alg).decode("ascii")
    rules = svc.policy[client.category]
    release = claims_mod.plan_release("", user.claims_request, rules)
    if release.id_token:
        from idp.consent import record_disclosure

        values = claims_mod.release_values(user.account, release.id_token, claims_request=user.claims_request,
                                           channel="id_token", sector=client.sector, salt=svc.pairwise_salt)
        payload.update(values)
        record_disclosure(current_db(), user.account_id, client.client_id, sorted(values), "id_token")
    header = {"alg": entry.alg, "kid": entry.kid, "typ": "JWT"}
    return jwt.encode(header, payload, entry.key, algorithms=[entry.alg])


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> StoredToken | None:
        return _find_token(token_string, token_type_hint)

    def revoke_token(self, token: StoredToken, request: OAuth2Request) -> None:
        token.row.revoked = True


class Introspection(IntrospectionEndpoint):
    """RFC 7662 for confidential clients: a client learns only about its own tokens (§4)."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> StoredToken | None:
        return _find_token(token_string, token_type_hint)

    def check_permission(self, token: StoredToken, client: RegisteredClient, request: OAuth2Request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: StoredToken) -> dict[str, Any]:
        svc = services()
        client = token.get_client()
        bound = {"token_type": "DPoP", "cnf": {"jkt": token.row.dpop_jkt}} if token.row.dpop_jkt else {}
        return {
            "active": True,
            "client_id": client.client_id,
            "token_type": "Bearer",
            "scope": token.row.scope,
            "sub": claims_mod.subject(token.row.account_id, client.sector, svc.pairwise_salt),
            "aud": client.client_id,
            "iss": svc.settings.issuer,
            "exp": token.row.issued_at + token.row.expires_in,
            "iat": token.row.issued_at,
            **bound,  # RFC 9449 §6.2: the confirmation of a DPoP-bound token
        }


@dataclass
class BearerGrant:
    """What an access token presented at a resource (RFC 6750) stands for."""

    token: Token
    account: Account
    consent_active: bool


def bearer_grant(token_string: str) -> BearerGrant | None:
    """The live access token with its account, whether its consent still stands, and its
    client (kept for :func:`query_client`), in one statement (OIDC Core §5.3.1). Only an
    access token is a bearer credential (RFC 6750 §1.2): a refresh token presented here is
    unknown."""
    if not isinstance(token_string, str) or len(token_string) > 512:
        return None
    found = current_db().execute(_BEARER, {"digest": token_hash(token_string)}).first()
    if found is None:
        return None
    row, account, consent_id, withdrawn_at = found[:4]
    remember_client(row.client_id, found)  # the client's columns follow (RegisteredClient reads them by name)
    stored = StoredToken(row)
    if stored.is_expired() or stored.is_revoked():
        return None
    return BearerGrant(row, account, consent_id is not None and withdrawn_at is None)


_BEARER = (
    select(Token, Account, Consent.id.label("consent_id"), Consent.withdrawn_at.label("consent_withdrawn_at"),
           Client.__table__)
    .join(Account, Account.id == Token.account_id)
    .join(Client.__table__, Client.__table__.c.client_id == Token.client_id)
    .outerjoin(Consent, and_(Consent.account_id == Token.account_id, Consent.client_id == Token.client_id))
    .where(Token.access_token_hash == bindparam("digest")))


def _find_token(token_string: str, hint: str | None) -> StoredToken | None:
    if not isinstance(token_string, str) or len(token_string) > 512:
        return None
    digest = token_hash(token_string)
    session = current_db()
    order = [Token.refresh_token_hash, Token.access_token_hash]
    if hint != "refresh_token":
        order.reverse()
    for column in order:
        row = session.scalars(select(Token).where(column == digest)).first()
        if row is not None:
            token = StoredToken(row)
            if column is Token.access_token_hash and (token.is_expired() or token.is_revoked()):
                return None
            if column is Token.refresh_token_hash and (token.is_refresh_expired() or token.is_revoked()):
                return None
            return token
    return None


class Issuer(IssuerParameter):
    def get_issuer(self) -> str:
        return services().settings.issuer


def _expires_in(client: RegisteredClient, grant_type: str) -> int:
    return services().policy[client.category].access_token_lifetime


class IssuerRequest(FlaskOAuth2Request):
    """authlib's Flask request with its URL rebuilt from the issuer: a forged or proxied Host
    header never decides which endpoint a request is for (nor makes authlib refuse it as
    insecure transport with a 500)."""

    def __init__(self, request: Any) -> None:
        query = request.query_string.decode("latin-1")
        uri = services().settings.url(request.path) + (f"?{query}" if query else "")
        OAuth2Request.__init__(self, method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class Server(AuthorizationServer):
    """Accepts requests rebuilt from stored parameters (a resumed transaction, a pushed request);
    answers every token-endpoint failure with an RFC 6749 §5.2 error, never a 500."""

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return IssuerRequest(flask_request)

    def handle_error_response(self, request: Any, error: Any) -> Any:
        """Every JSON error carries a description (PROTOCOL "Encodings"; RFC 6749 §5.2 allows it)."""
        if not getattr(error, "description", None):
            error.description = error.error.replace("_", " ")
        return super().handle_error_response(request, error)

    def create_token_response(self, request: Any = None) -> Any:
        try:
            return super().create_token_response(request)
        except ValueError:
            # authlib refuses to build an error whose description would echo characters
            # RFC 6749 §5.2 forbids (e.g. a grant_type with a quote): answer plainly.
            return self.handle_error_response(None, InvalidRequestError("malformed token request"))


def create_server(app: Flask) -> AuthorizationServer:
    server = Server(app, query_client=query_client, save_token=save_token)
    server.register_token_generator("default", BearerTokenGenerator(
        lambda **_: secrets.token_urlsafe(32), lambda **_: secrets.token_urlsafe(48), _expires_in))
    server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True), OpenIDConnectCode()])
    server.register_grant(RefreshTokenGrant)
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    server.register_extension(Issuer())
    return server
