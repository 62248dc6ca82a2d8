"""The runner's independent client stack: a person with a phone, a browser, a relying party.

Built only on ``tests/support`` (authlib's OAuth client and jwcrypto in ``rp.py``, the
wallet and software authenticator, the RP host) and ``requests``; nothing here imports the
server. The person proves who they are with a test My Number Card once per device
(PROTOCOL §3) and signs in with that device key (PROTOCOL §4), exactly as a wallet app does.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

from tests.support.rp import (
    AuthorizationRequest,
    IdTokenError,
    RelyingParty,
    RPError,
    browser_login,
    origin_of,
    parse_consent_form,
    post_registration,
)
from tests.support.wallet import Enrolled, Wallet

if TYPE_CHECKING:
    from conformance.environment import Environment
    from conformance.framework import TestRun
    from idp.proofing.demo_card import TestCard

TIMEOUT = 20.0


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


class Person:
    """One person (one test card); every browser gets its own enrolled phone key, so
    concurrent modules never race one authenticator's signature counter."""

    def __init__(self, base_url: str, card: TestCard) -> None:
        self.base_url = base_url
        self.card = card
        self._lock = threading.Lock()

    def device(self) -> tuple[Wallet, Enrolled]:
        with self._lock:  # the first enrolment creates the account; later ones join it
            wallet = Wallet(self.base_url, timeout=TIMEOUT)
            return wallet, wallet.enroll(self.card)


@dataclass
class Landing:
    """Where a browser ended up: the RP's redirect URI (``url``) or an IdP page (``page``)."""

    url: str | None
    page: requests.Response | None = None

    @property
    def params(self) -> dict[str, str]:
        return query_of(self.url) if self.url else {}


class Browser:
    """A user agent with its own cookies and its own phone (same person)."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.session = requests.Session()
        self.wallet, self.device = env.person.device()
        self.idp_origin = origin_of(env.issuer)

    def go(self, url: str, *, method: str = "GET", data: Mapping[str, str] | None = None,
           consent: str | None = "allow") -> Landing:
        """Send the browser to ``url`` and walk the IdP's pages (login, consent) as the person
        would, until the IdP redirects to the RP or shows a page that is not a step."""
        response = self.session.request(method, url, data=data, allow_redirects=False, timeout=TIMEOUT)
        target = redirect_target(response, url)
        if target is None:
            return Landing(None, response)
        if origin_of(target) != self.idp_origin:
            return Landing(target)
        callback = browser_login(self.session, self.env.issuer, target, self.wallet, self.device, consent=consent,
                                 timeout=TIMEOUT)
        return Landing(callback)

    def pages(self, url: str) -> tuple[Landing, list[str]]:
        """Like :meth:`go`, also returning the HTML of the login and consent pages seen."""
        seen: list[str] = []
        response = self.session.get(url, allow_redirects=False, timeout=TIMEOUT)
        target = redirect_target(response, url)
        for _ in range(10):
            if target is None:
                return Landing(None, response), seen
            if origin_of(target) != self.idp_origin:
                return Landing(target), seen
            path = urlsplit(target).path
            page = self.session.get(target, allow_redirects=False, timeout=TIMEOUT)
            if path.endswith("/login") and page.status_code == 200:
                seen.append(page.text)
                txn = query_of(target)["txn"]
                answer = self.wallet.with_session(self.session).login(txn, authenticator=self.device)
                target = urljoin(target, answer["next"])
            elif path.endswith("/consent") and page.status_code == 200:
                seen.append(page.text)
                form = parse_consent_form(page.text)
                posted = self.session.post(urljoin(target, form.action), data=form.submission("allow"),
                                           allow_redirects=False, timeout=TIMEOUT)
                target = redirect_target(posted, target)
            else:
                target, response = redirect_target(page, target), page
        return Landing(None, response), seen


def redirect_target(response: requests.Response, url: str) -> str | None:
    if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
        return urljoin(url, response.headers["Location"])
    return None


@dataclass
class AuthRequest:
    """An authentication request the RP made, as parameters (so modules can reshape it)."""

    params: dict[str, str]
    pending: AuthorizationRequest
    endpoint: str

    @property
    def url(self) -> str:
        return f"{self.endpoint}?{urlencode(self.params)}"

    @property
    def state(self) -> str:
        return self.pending.state

    @property
    def nonce(self) -> str | None:
        return self.pending.nonce


@dataclass
class Tokens:
    """A token endpoint answer, raw and parsed, with the validated ID token."""

    response: requests.Response
    body: dict[str, Any]
    claims: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def access_token(self) -> str:
        return self.body["access_token"]

    @property
    def id_token(self) -> str | None:
        return self.body.get("id_token")

    @property
    def refresh_token(self) -> str | None:
        return self.body.get("refresh_token")


class Client:
    """A dynamically registered RP (OIDC Registration 1.0), with the raw calls modules need."""

    def __init__(self, env: Environment, rp: RelyingParty) -> None:
        self.env = env
        self.rp = rp

    @classmethod
    def register(cls, run: TestRun, *, auth: str = "client_secret_basic", key: JWK | None = None,
                 redirect_uri: str | None = None, scope: str = "openid", unregister: bool = True,
                 **metadata: Any) -> Client:
        """OP-Registration-Dynamic: register, check the answer (OIDCR-3.2), unregister at the end."""
        env = run.env
        redirect_uri = redirect_uri or env.callback_url(run.spec.name)
        if auth == "private_key_jwt" and key is None:
            key = rsa_key()
        metadata.setdefault("contacts", ["conformance@example.jp"])
        metadata.setdefault("client_name", f"conformance {run.spec.name}")
        try:
            rp = RelyingParty.register(env.issuer, redirect_uri=redirect_uri, rp_category=env.options.category,
                                       session=requests.Session(), registration_token=env.registration_token,
                                       token_endpoint_auth_method=auth, signing_key=key, scope=scope, **metadata)
        except RPError as exc:
            run.fail(f"dynamic registration failed: HTTP {exc.status} {exc.body!r}", ref="OIDCR-3.2")
        rp.timeout = TIMEOUT
        from conformance import checks

        checks.registration_response(run, rp.client, auth)
        client = cls(env, rp)
        if unregister:
            run.cleanups.append(client.unregister)
        return client

    @property
    def client_id(self) -> str:
        return self.rp.client_id

    @property
    def redirect_uri(self) -> str:
        return self.rp.redirect_uri

    def unregister(self, run: TestRun) -> None:
        """RFC 7592 §2.3, as the suite's cleanup does (a failure is a WARNING there too)."""
        uri, token = self.rp.client.get("registration_client_uri"), self.rp.client.get("registration_access_token")
        if not uri or not token:
            run.warn("no registration_client_uri / registration_access_token to unregister with", ref="RFC7592-2.3")
            return
        response = self.rp.session.delete(uri, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        run.check(response.status_code == 204, f"unregistering the client answered HTTP {response.status_code}, not 204",
                  ref="RFC7592-2.3", warning=True)

    # authorization ---------------------------------------------------------------------
    def auth_request(self, *, scope: str | None = None, nonce: bool | str = True, **extra: Any) -> AuthRequest:
        """An authentication request (OIDC Core §3.1.2.1) with state, nonce and PKCE S256."""
        url, *_ = self.rp.authorization_url(scope=scope, nonce=nonce, **extra)
        assert self.rp.last_request is not None
        return AuthRequest(query_of(url), self.rp.last_request, self.rp.provider["authorization_endpoint"])

    def token_request(self, data: Mapping[str, str] | list[tuple[str, str]]) -> requests.Response:
        return self.rp.token_request(data)

    def exchange(self, run: TestRun, code: str, request: AuthRequest) -> Tokens:
        """OIDC Core §3.1.3.1 token request with the client's own authentication."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": request.pending.redirect_uri}
        if request.pending.code_verifier:
            data["code_verifier"] = request.pending.code_verifier
        response = self.token_request(data)
        return Tokens(response, json_body(response))

    def validate_id_token(self, run: TestRun, tokens: Tokens, request: AuthRequest | None, *,
                          ref: str = "OIDCC-3.1.3.7") -> None:
        """ValidateIdToken + ValidateIdTokenSignature + ValidateIdTokenNonce (the RP's §3.1.3.7 checks)."""
        run.require(tokens.id_token, "no id_token in the token response", ref="OIDCC-3.1.3.3")
        try:
            header, claims = self.rp.validate_id_token(
                tokens.id_token, nonce=request.nonce if request else None, access_token=tokens.body.get("access_token"),
                max_age=request.pending.max_age if request else None)
        except IdTokenError as exc:
            run.fail(f"ID token invalid: {exc}", ref=ref)
        tokens.header, tokens.claims = header, claims

    def userinfo(self, access_token: str, how: str = "GET") -> requests.Response:
        """OIDC Core §5.3.1: GET or POST with the Bearer header, or POST with the form body."""
        endpoint = self.rp.provider["userinfo_endpoint"]
        bearer = {"Authorization": f"Bearer {access_token}", "Accept": "application/json, application/jwt"}
        if how == "GET":
            return requests.get(endpoint, headers=bearer, timeout=TIMEOUT)
        if how == "POST-header":
            return requests.post(endpoint, headers=bearer, timeout=TIMEOUT)
        return requests.post(endpoint, data={"access_token": access_token}, timeout=TIMEOUT)

    def refresh(self, refresh_token: str, scope: str | None = None) -> requests.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            data["scope"] = scope
        return self.token_request(data)

    # request objects (OIDC Core §6) ---------------------------------------------------------
    def request_object(self, claims: Mapping[str, Any], *, alg: str = "none", key: JWK | None = None) -> str:
        """A request object: unsigned (``alg: none``) or signed with ``key``."""
        payload = json.dumps(dict(claims)).encode()
        if alg == "none":
            return f"{b64url(json.dumps({'alg': 'none'}).encode())}.{b64url(payload)}."
        key = key or self.rp.signing_key
        assert key is not None
        jws = JWS(payload)
        jws.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "kid": key.get("kid"), "typ": "oauth-authz-req+jwt"}))
        return jws.serialize(compact=True)


def rsa_key() -> JWK:
    """GenerateRS256ClientJWKsWithKeyID: an RSA-2048 key with a kid, as the suite registers."""
    return JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(8), use="sig", alg="RS256")


def json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def registration_request(env: Environment, run: TestRun, body: Mapping[str, Any]) -> requests.Response:
    """A raw registration POST (negative registration modules)."""
    return post_registration(env.issuer, {"rp_category": env.options.category, "client_name": run.spec.name,
                                          **body}, session=requests.Session(),
                             registration_token=env.registration_token, provider=env.provider, timeout=TIMEOUT)


def wait(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
