"""The authorization endpoint (OIDC Core §3.1.2): validate, then answer, log in, or ask consent.

Order of work, each step a small function:
1. merge a pushed request (RFC 9126 §4) into the parameters;
2. authlib validates client, redirect URI, response type, scope, PKCE and prompt syntax;
   an untrusted client or redirect URI gets an error *page*, never a redirect
   (RFC 6749 §4.1.2.1);
3. our own checks, in a fixed order (:data:`CHECKS`), each raising a redirectable error;
4. decide: a valid session and remembered consent answer at once; ``prompt=none``
   without them answers ``login_required`` / ``consent_required``; otherwise a
   transaction is opened and the browser goes to ``/login`` or ``/consent``.

A request object (``request`` / ``request_uri``, OIDC Core §6) is merged into the
parameters before step 2, so its values (``redirect_uri`` included) are the ones
validated. Error descriptions are restricted to the characters RFC 6749 §4.1.2.1 allows.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request, scope_to_list
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from flask import Response, redirect, request
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from idp.clients import cache as client_cache
from idp.clients.registry import RegisteredClient
from idp.consent import consent_covers, find_consent
from idp.context import services
from idp.errors import UnsafeAuthorizationRequest
from idp.oidc import claims as claims_mod
from idp.oidc import dpop, request_object
from idp.oidc.par import PUSHED_MARK, take_pushed_request
from idp.oidc.server import CHECKED_MARK, AuthorizedUser, new_code, query_client
from idp.oidc.session import current_db
from idp.privacy import contains_individual_number
from idp.policy import ACR_ORDER, acr_rank
from idp.storage.models import AuthorizationTransaction, Consent, SessionClient, utcnow
from idp.web import browser

TRANSACTION_LIFETIME = timedelta(minutes=10)
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_PARAM_LENGTH = 4096
MAX_REQUEST_PARAM_LENGTH = 64 * 1024
# What a transaction or a pushed request keeps: OIDC Core §3.1.2.1 and §5.5, RFC 7636 §4.3,
# OIDC for Identity Assurance (purpose), RFC 9449 §10 (dpop_jkt). Anything else is ignored
# (RFC 6749 §3.1: "The authorization server MUST ignore unrecognized request parameters"),
# so a request cannot make the IdP store what it likes.
AUTHORIZATION_PARAMETERS = frozenset({
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "response_mode", "display",
    "prompt", "max_age", "ui_locales", "claims_locales", "id_token_hint", "login_hint", "acr_values", "claims",
    "code_challenge", "code_challenge_method", "purpose", "dpop_jkt",
})
MAX_STORED_PARAMETERS = 16 * 1024  # characters of all kept values together


class AuthorizationError(Exception):
    """A redirectable authorization error (OIDC Core §3.1.2.6)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class Checked:
    """The validated request, the client, and what our checks learned about it."""

    params: dict[str, Any]
    client: RegisteredClient
    redirect_uri: str
    claims_request: dict[str, Any] | None = None
    max_age: int | None = None
    prompts: frozenset[str] = frozenset()
    hint_sub: str | None = None
    pushed: bool = False


class AuthorizationServerRequest(OAuth2Request):
    """authlib's request built from already-collected parameters (query, form or stored)."""

    def __init__(self, params: Mapping[str, Any], datalist: Mapping[str, list[Any]] | None = None) -> None:
        super().__init__("GET", services().settings.url("/authorize"))
        self.payload = BasicOAuth2Payload(dict(params))
        if datalist is not None:
            self.payload._datalist = dict(datalist)

    @property
    def args(self) -> Mapping[str, Any]:
        return self.payload.data


def safe_description(text: str) -> str:
    """RFC 6749 §4.1.2.1 / §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E only."""
    cleaned = "".join(ch if ch in _ALLOWED_DESCRIPTION else "?" for ch in text.replace('"', "'").replace("\\", "/"))
    return cleaned[:300] or "error"


_ALLOWED_DESCRIPTION = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    params = [("error", error), ("error_description", safe_description(description))]
    if state:
        params.append(("state", state))
    params.append(("iss", services().settings.issuer))
    return redirect(add_params_to_uri(redirect_uri, params), code=302)


OVERSIZED = "_oversized"  # names of parameters dropped for their length (refused by check_lengths)
LONG_PARAMS = ("request", "claims", "id_token_hint")


def collect_params() -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The request's parameters (query, or form for POST). An over-long value is dropped and
    named, so the refusal can still be redirected once client and redirect URI are known."""
    source = request.form if request.method == "POST" else request.args
    datalist = {key: source.getlist(key) for key in source if key != OVERSIZED}
    params: dict[str, Any] = {key: values[0] for key, values in datalist.items()}
    oversized = [key for key, value in params.items()
                 if len(value) > (MAX_REQUEST_PARAM_LENGTH if key in LONG_PARAMS else MAX_PARAM_LENGTH)]
    for key in oversized:
        del params[key]
        del datalist[key]
    if oversized:
        params[OVERSIZED] = ",".join(sorted(oversized))[:200]
    return params, datalist


def safe_redirect_uri(params: Mapping[str, Any]) -> str | None:
    """RFC 6749 §4.1.2.1: where an error may be sent — a registered redirect URI of an existing
    client (the only one registered when none is named), otherwise nowhere."""
    client = query_client(params.get("client_id"))  # type: ignore[arg-type]
    if client is None:
        return None
    named = params.get("redirect_uri")
    if named is None:
        return client.get_default_redirect_uri()
    return named if client.check_redirect_uri(named) else None


def validate(params: dict[str, Any], datalist: Mapping[str, list[Any]] | None, end_user: Any,
             *, pushed: bool = False) -> Checked:
    """Steps 2–3; raises UnsafeAuthorizationRequest or RedirectableError."""
    server = services_server()
    oauth_request = AuthorizationServerRequest(params, datalist)
    try:
        grant = server.get_consent_grant(request=oauth_request, end_user=end_user)
    except OAuth2Error as exc:
        target = getattr(exc, "redirect_uri", None) or _redirectable(exc, params)
        if target:
            raise RedirectableError(target, exc.error, exc.get_error_description() or exc.error,
                                    params.get("state")) from None
        raise UnsafeAuthorizationRequest(exc.description or exc.error) from None
    except ValueError:
        # authlib refuses to build an error echoing characters RFC 6749 §4.1.2.1 forbids
        raise UnsafeAuthorizationRequest("malformed authorization request") from None
    client: RegisteredClient = grant.client
    redirect_uri = grant.redirect_uri or params.get("redirect_uri") or client.get_default_redirect_uri()
    checked = Checked(params=params, client=client, redirect_uri=redirect_uri, pushed=pushed)
    try:
        for check in CHECKS:
            check(checked)
    except AuthorizationError as exc:
        raise RedirectableError(redirect_uri, exc.error, exc.description, params.get("state")) from None
    return checked


def _redirectable(exc: OAuth2Error, params: Mapping[str, Any]) -> str | None:
    """authlib leaves some errors unredirected (a repeated parameter); send them to the RP when
    client and redirect URI are trustworthy. Client and redirect errors never are."""
    if exc.error in ("invalid_client", "unauthorized_client") or "redirect" in (exc.description or "").lower():
        return None
    return safe_redirect_uri(params)


class RedirectableError(Exception):
    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None) -> None:
        super().__init__(description)
        self.redirect_uri, self.error, self.description, self.state = redirect_uri, error, description, state

    def response(self) -> Response:
        return error_redirect(self.redirect_uri, self.error, self.description, self.state)


def services_server():  # type: ignore[no-untyped-def]
    from flask import current_app

    return current_app.extensions["idp.oauth"]


# ---- the checks, in order ----

def check_lengths(c: Checked) -> None:
    if OVERSIZED in c.params:
        raise AuthorizationError("invalid_request", f"parameter too long: {c.params[OVERSIZED]}")


def keep_recognised_parameters(c: Checked) -> None:
    """RFC 6749 §3.1: unrecognised parameters are ignored, so they are not stored either;
    what is kept is bounded in size."""
    for key in [key for key in c.params if key not in AUTHORIZATION_PARAMETERS]:
        del c.params[key]
    if sum(len(str(value)) for value in c.params.values()) > MAX_STORED_PARAMETERS:
        raise AuthorizationError("invalid_request", "the authorization request is too large")


def check_response_mode(c: Checked) -> None:
    mode = c.params.get("response_mode")
    if mode not in (None, "", "query"):
        raise AuthorizationError("invalid_request", "response_mode must be query")


def check_request_object(c: Checked) -> None:
    """Request objects were merged before validation (:func:`with_request_object`); one that
    is still here came from a pushed request or a nested object, which §6 does not allow."""
    if "request" in c.params or "request_uri" in c.params:
        raise AuthorizationError("invalid_request", "a request object cannot carry another request object")


def check_openid_scope(c: Checked) -> None:
    if "openid" not in (scope_to_list(c.params.get("scope") or "") or []):
        raise AuthorizationError("invalid_scope", "the openid scope is required")


def check_pkce(c: Checked) -> None:
    """PKCE S256 for every client (PROTOCOL §6, RFC 9700 §2.1.1); ``plain`` is refused.

    The certification profile: an operator policy with ``require_pkce = false`` lets a
    category's *confidential* clients use the code flow exactly as OpenID Connect Core
    §3.1.2.1 defines it, without PKCE and with ``nonce`` optional (the OpenID Foundation's
    oidcc plans send neither). The risk accepted is RFC 9700 §4.5's code injection, against
    which such a client is then protected only by its own ``state`` handling (and ``nonce``
    when it sends one). A public client never may: it has no secret binding the code to it.
    """
    if not c.params.get("code_challenge"):
        rules = services().policy[c.client.category]
        confidential = c.client.token_endpoint_auth_method != "none"
        if not rules.require_pkce and confidential and not c.params.get("code_challenge_method"):
            return
        raise AuthorizationError("invalid_request", "code_challenge is required (PKCE S256)")
    if c.params.get("code_challenge_method") != "S256":
        raise AuthorizationError("invalid_request", "code_challenge_method must be S256")


def check_prompt(c: Checked) -> None:
    prompts = frozenset((c.params.get("prompt") or "").split())
    if not prompts <= PROMPTS:
        raise AuthorizationError("invalid_request", "unknown prompt value")
    c.prompts = prompts


def check_max_age(c: Checked) -> None:
    """OIDC Core §3.1.2.1: max_age in seconds; the client's default_max_age applies otherwise."""
    raw = c.params.get("max_age")
    if raw in (None, ""):
        c.max_age = c.client.metadata.get("default_max_age")
        return
    if not str(raw).isdigit() or len(str(raw)) > 10:
        raise AuthorizationError("invalid_request", "max_age must be a non-negative integer")
    c.max_age = int(raw)


def check_claims_parameter(c: Checked) -> None:
    try:
        c.claims_request = claims_mod.parse_claims_parameter(c.params.get("claims"))
    except claims_mod.ClaimsRequestError as exc:
        raise AuthorizationError("invalid_request", str(exc)) from None


def check_no_individual_number(c: Checked) -> None:
    """The individual number is never accepted, in a hint or anywhere else (PROTOCOL §3)."""
    if contains_individual_number({k: v for k, v in c.params.items() if k != "request"}):
        raise AuthorizationError("invalid_request", "requests must not carry an individual number")


def check_id_token_hint(c: Checked) -> None:
    """OIDC Core §3.1.2.1: a hint we issued to this client; its ``sub`` must match the session."""
    hint = c.params.get("id_token_hint")
    if not hint:
        return
    try:
        token = jwt.decode(hint, services().keystore.verification_keys(), algorithms=["ES256", "RS256"])
    except (JoseError, ValueError):
        raise AuthorizationError("invalid_request", "id_token_hint is not an ID token issued here") from None
    aud = token.claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if token.claims.get("iss") != services().settings.issuer or c.client.client_id not in audiences:
        raise AuthorizationError("invalid_request", "id_token_hint was not issued to this client")
    c.hint_sub = token.claims.get("sub")


def check_acr_request(c: Checked) -> None:
    """OIDC Core §5.5.1.1: an essential ``acr`` must name values this OP can reach."""
    essential = essential_acr_values(c.claims_request)
    if essential is not None and not set(essential) & set(ACR_ORDER):
        raise AuthorizationError("access_denied", "none of the essential acr values can be met")


def check_policy(c: Checked) -> None:
    """Category rules at authorization (PROTOCOL §5): pushed requests where the policy says.

    A claim outside the category's policy, ``verified_claims`` included, is no error: it is
    simply not released nor offered on the consent page (PROTOCOL §5; OIDC Identity
    Assurance 1.0 §6.5: the OP omits what it cannot provide). :mod:`idp.oidc.claims`
    leaves it out when the release is planned."""
    rules = services().policy[c.client.category]
    if (rules.require_par or c.client.metadata.get("require_pushed_authorization_requests") is True) \
            and not c.pushed:
        raise AuthorizationError("invalid_request",
                                 f"{c.client.category} clients must use pushed authorization requests (RFC 9126)")
    purpose = c.params.get("purpose")
    if purpose is not None and not 3 <= len(purpose) <= 300:
        raise AuthorizationError("invalid_request", "purpose must be 3 to 300 characters")


def check_dpop_jkt(c: Checked) -> None:
    """RFC 9449 §10: ``dpop_jkt`` is the base64url JWK SHA-256 thumbprint of the client's key."""
    if "dpop_jkt" in c.params and not dpop.is_jkt(c.params["dpop_jkt"]):
        raise AuthorizationError("invalid_request", "dpop_jkt must be a JWK SHA-256 thumbprint (RFC 7638)")


CHECKS: tuple[Callable[[Checked], None], ...] = (
    check_lengths,
    keep_recognised_parameters,
    check_response_mode,
    check_request_object,
    check_openid_scope,
    check_pkce,
    check_prompt,
    check_max_age,
    check_claims_parameter,
    check_no_individual_number,
    check_id_token_hint,
    check_acr_request,
    check_policy,
    check_dpop_jkt,
)


# ---- the decision ----

def release_for(c_params: Mapping[str, Any], client: RegisteredClient,
                claims_request: Mapping[str, Any] | None) -> claims_mod.Release:
    return claims_mod.plan_release(c_params.get("scope") or "", claims_request, services().policy[client.category])


def purpose_for(params: Mapping[str, Any], client: RegisteredClient) -> str:
    return params.get("purpose") or client.metadata.get("purpose") or ""


def consent_answers(consent: Consent | None, params: Mapping[str, Any], client: RegisteredClient,
                    claims_request: Mapping[str, Any] | None) -> bool:
    """Whether the account's remembered ``consent`` for this client covers this request."""
    release = release_for(params, client, claims_request)
    return consent_covers(consent, claims=release.all, scopes=consented_scopes(params),
                          purpose=purpose_for(params, client), policy_version=services().policy.version)


def consented_scopes(params: Mapping[str, Any]) -> list[str]:
    return [s for s in scope_to_list(params.get("scope") or "") or [] if s == "offline_access"]


def essential_acr_values(claims_request: Mapping[str, Any] | None) -> list[str] | None:
    """The ``values`` of an essential ``acr`` request in ``claims.id_token`` (§5.5.1.1), else None."""
    spec = ((claims_request or {}).get("id_token") or {}).get("acr")
    if not isinstance(spec, dict) or spec.get("essential") is not True:
        return None
    values = spec.get("values") if isinstance(spec.get("values"), list) else [spec.get("value")]
    return [v for v in values if isinstance(v, str)]


def wanted_acr_rank(c: Checked) -> int:
    """The lowest rank in ACR_ORDER that answers ``acr_values`` / an essential ``acr`` (-1: any)."""
    wanted = essential_acr_values(c.claims_request) or (c.params.get("acr_values") or "").split()
    ranks = [ACR_ORDER.index(v) for v in wanted if v in ACR_ORDER]
    return min(ranks) if ranks else -1


def session_satisfies(c: Checked, session: browser.SessionView | None) -> bool:
    """OIDC Core §3.1.2.1: ``prompt=login``, ``max_age``, ``id_token_hint`` and the requested
    ``acr`` decide whether the current session may answer without a new login."""
    if session is None or c.prompts & {"login", "select_account"}:
        return False  # select_account: a fresh device sign-in is how a person picks the account
    if c.max_age is not None and time.time() - session.auth_time > c.max_age:
        return False
    if c.hint_sub is not None:
        sub = claims_mod.subject(session.account_id, c.client.sector, services().pairwise_salt)
        if sub != c.hint_sub:
            return False
    if acr_rank(session.acr) < wanted_acr_rank(c) and "none" not in c.prompts:
        return False  # a voluntary acr a new login may reach; prompt=none answers with what is there
    if not services().policy[c.client.category].reached_by(session.acr):
        return False  # the category's policy needs a stronger login than this session had
    return True


def issue_code(c: Checked, user: AuthorizedUser, session: browser.SessionView,
               complete: Callable[[dict[str, Any]], None]) -> Response:
    """The code response (OIDC Core §3.1.2.5, RFC 6749 §4.1.2) with ``iss`` (RFC 9207 §2);
    records the client in the browser session for logout.

    A code is its transaction's outcome: ``complete`` is the caller's one write that completes
    the transaction, given the code's columns (none for an error response), so the code is
    kept by the same compare-and-set that ends the transaction. The request was validated
    once, when it arrived (:func:`validate`); the code is issued here directly rather than
    through authlib's authorization response, which would validate the whole request again.
    """
    essential = essential_acr_values(c.claims_request)
    if essential is not None and user.acr not in essential:
        complete({})
        return error_redirect(c.redirect_uri, "access_denied", "the essential acr could not be met",
                              c.params.get("state"))
    user.nonce = c.params.get("nonce")
    remember_session_client(session, c.client.client_id)
    code, columns = new_code(user)
    complete(columns)
    answer = [("code", code)]
    if c.params.get("state"):
        answer.append(("state", c.params["state"]))
    answer.append(("iss", services().settings.issuer))
    return redirect(add_params_to_uri(c.redirect_uri, answer), code=302)


def remember_session_client(session: browser.SessionView, client_id: str) -> None:
    """Back-Channel Logout 1.0 §2.7: which RPs this browser session signed in to (one
    statement: an insert that leaves an existing pair alone)."""
    connection = current_db().connection()
    connection.execute(_SESSION_CLIENT[connection.dialect.name], {"session_id": session.row.id,
                                                                  "client_id": client_id})


_SESSION_CLIENT = {
    "postgresql": postgresql_insert(SessionClient.__table__).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(SessionClient.__table__).on_conflict_do_nothing(),
}


def authorized_user(session: browser.SessionView, c: Checked) -> AuthorizedUser:
    return AuthorizedUser(account_id=session.account_id, known_account=session.account,
                          auth_time=session.auth_time, acr=session.acr, amr=session.amr,
                          session_id=session.client_sid(c.client.client_id), claims_request=c.claims_request,
                          device_serial=session.device_serial)


def with_request_object(params: dict[str, Any]) -> dict[str, Any]:
    """Merge ``request`` / ``request_uri`` (OIDC Core §6). A failure is redirected to the
    query's redirect URI when that one is registered, otherwise shown as an error page."""
    client = query_client(params.get("client_id"))  # type: ignore[arg-type]
    if client is None:
        raise UnsafeAuthorizationRequest("unknown client")
    try:
        return request_object.resolve(params, client)
    except request_object.RequestObjectError as exc:
        redirect_uri = safe_redirect_uri(params)
        if not redirect_uri:
            raise UnsafeAuthorizationRequest(f"{exc.error}: {exc.description}") from None
        raise RedirectableError(redirect_uri, exc.error, exc.description, params.get("state") or exc.state) from None


def handle() -> Response:
    params, collected = collect_params()
    params, pushed = take_pushed_request(params)
    datalist: dict[str, list[Any]] | None = None if pushed else collected
    session = browser.current_session()
    try:
        if not pushed and request_object.carries_request_object(params):
            params, datalist = with_request_object(params), None
        c = validate(params, datalist, session.account if session else None,
                     pushed=pushed)
    except RedirectableError as exc:
        return exc.response()
    if session_satisfies(c, session):
        assert session is not None
        if "consent" not in c.prompts and consent_answers(
                find_consent(current_db(), session.account_id, c.client.client_id), c.params, c.client,
                c.claims_request):
            return issue_code(c, authorized_user(session, c), session, _completed_transaction(c, session))
        if "none" in c.prompts:
            return error_redirect(c.redirect_uri, "consent_required", "consent is needed", c.params.get("state"))
        return redirect(f"/consent?txn={open_transaction(c, authenticated=session)}", code=302)
    if "none" in c.prompts:
        return error_redirect(c.redirect_uri, "login_required", "the person must log in", c.params.get("state"))
    return redirect(f"/login?txn={open_transaction(c, authenticated=None)}", code=302)


def _completed_transaction(c: Checked, session: browser.SessionView) -> Callable[[dict[str, Any]], None]:
    """A code issued at once (single sign-on) is kept on a transaction written completed."""
    def complete(code: dict[str, Any]) -> None:
        if code:
            open_transaction(c, authenticated=session, state="completed", **code)
    return complete


def open_transaction(c: Checked, *, authenticated: browser.SessionView | None, **settled: Any) -> str:
    """Open a transaction for the login or consent step; returns its id.

    It keeps the request with what validating it learned (:data:`CHECKED_MARK`), so the
    login and consent steps use it as it is instead of validating it again."""
    checked = {"redirect_uri": c.redirect_uri, "claims": c.claims_request, "prompts": sorted(c.prompts)}
    txn_id = secrets.token_urlsafe(24)
    signed_in: dict[str, Any] = {}
    if authenticated is not None:
        signed_in = {"state": "authenticated", "account_id": authenticated.account_id,
                     "device_serial": authenticated.device_serial, "auth_time": authenticated.auth_time,
                     "amr": authenticated.amr, "acr": authenticated.acr}
    client_cache.insert_row_confirming(
        current_db(), AuthorizationTransaction, c.client.client_id,
        id=txn_id,
        client_id=c.client.client_id,
        request={**c.params, PUSHED_MARK: c.pushed, CHECKED_MARK: checked},
        browser_binding=browser.binding_digest(),
        challenge=secrets.token_bytes(32),
        confirmation_code=f"{secrets.randbelow(10_000):04d}",
        expires_at=utcnow() + TRANSACTION_LIFETIME,
        **{**signed_in, **settled},
    )
    return txn_id


def stored_claims_request(txn: AuthorizationTransaction) -> dict[str, Any] | None:
    checked = txn.request.get(CHECKED_MARK)
    if isinstance(checked, dict):
        return checked.get("claims")
    raw = txn.request.get("claims")
    return claims_mod.parse_claims_parameter(json.loads(raw) if isinstance(raw, str) else raw)


def stored_request(txn: AuthorizationTransaction, end_user: Any) -> Checked:
    """The request as validated when its transaction opened; raises UnsafeAuthorizationRequest
    or RedirectableError.

    Only what can have changed since is looked at again: the client must still be
    registered and the redirect URI still one of its own (RFC 6749 §4.1.2.1). A transaction
    opened before requests were stored validated (none lives longer than MAX_LIFETIME) is
    validated again.
    """
    params = dict(txn.request)
    pushed = bool(params.pop(PUSHED_MARK, False))
    checked = params.pop(CHECKED_MARK, None)
    if not isinstance(checked, dict):
        return validate(params, None, end_user, pushed=pushed)
    client = query_client(txn.client_id)
    if client is None or not client.check_redirect_uri(checked["redirect_uri"]):
        raise UnsafeAuthorizationRequest("this service or its redirect URI is no longer registered")
    return Checked(params=params, client=client, redirect_uri=checked["redirect_uri"],
                   claims_request=checked["claims"], prompts=frozenset(checked["prompts"]), pushed=pushed)
