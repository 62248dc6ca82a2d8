"""An independent OpenID Connect relying party and browser driver for tests.

The IdP's own OAuth code must not vouch for itself, so this RP uses authlib's *client*
for authorization URLs and token exchange and jwcrypto (a different JOSE library from
the server's) to validate ID tokens against the published JWKS, checking everything
OpenID Connect Core §3.1.3.7 asks of an RP plus the contract's extras (PROTOCOL.md §2,
§6: ``acr``, ``amr`` and ``auth_time`` in every ID token; RFC 9207 ``iss``).

``browser_login`` plays the person's browser through ``/login`` and ``/consent`` using
only the stable hooks of PROTOCOL.md §4, so end-to-end tests and the conformance runner
need no real browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import requests
from authlib.common.urls import add_params_to_qs
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from jwcrypto.common import JWException
from jwcrypto.jwk import JWK, JWKSet
from jwcrypto.jws import JWS
from jwcrypto.jwt import JWT

from tests.support.authenticator import SoftAuthenticator
from tests.support.dpop import DPoPKey
from tests.support.dpop import send as send_dpop
from tests.support.http import HttpError, body_of
from tests.support.wallet import Enrolled, Wallet

DISCOVERY_PATH = "/.well-known/openid-configuration"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASYMMETRIC_ALGS = frozenset({
    "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
})
DEFAULT_LEEWAY = 60
DEFAULT_TIMEOUT = 30.0
_HASHES: Mapping[str, Callable[[bytes], Any]] = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}
_KTY = {"ES": "EC", "RS": "RSA", "PS": "RSA", "Ed": "OKP"}


# errors ------------------------------------------------------------------------------
class RPError(HttpError):
    """An IdP endpoint answered the RP with a non-2xx status (or an unusable body)."""


class AuthorizationError(Exception):
    """The authorization response was an error, or failed the RP's checks (state, iss)."""

    def __init__(
        self, error: str, description: str | None = None, params: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{error}: {description or ''}")
        self.error = error
        self.description = description
        self.params = dict(params or {})


class IdTokenError(Exception):
    """An ID token failed validation; ``reason`` is a short code naming the failed check."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class BrowserFlowError(Exception):
    """A page in the login flow did not look like PROTOCOL.md §4 says it does."""

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


def _checked(response: requests.Response) -> Any:
    body = body_of(response)
    if not 200 <= response.status_code < 300:
        raise RPError(response.status_code, body, response)
    return body


# hashes and ID token validation ------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_hash(value: str, alg: str) -> str:
    """``at_hash`` / ``c_hash`` (OIDC Core §3.1.3.6, §3.3.2.11).

    Hash the ASCII value with the hash of the JWS ``alg`` (SHA-256 for ES256/RS256/PS256,
    and so on), keep the left half, base64url it. EdDSA (Ed25519) uses SHA-512.
    """
    if alg == "EdDSA":
        digest = hashlib.sha512(value.encode("ascii")).digest()
    else:
        hash_function = _HASHES.get(alg[-3:])
        if hash_function is None or alg[:2] not in _KTY:
            raise ValueError(f"no hash known for alg {alg!r}")
        digest = hash_function(value.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])


def _signing_key(jwks: JWKSet, header: Mapping[str, Any]) -> list[JWK]:
    """The keys that may have signed a token with this header (by kid, else by key type)."""
    alg = header["alg"]
    kty = _KTY.get(alg[:2])
    keys = [k for k in jwks["keys"] if k.get("use", "sig") == "sig"]
    kid = header.get("kid")
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    return [k for k in keys if k.get("kty") == kty and k.get("alg", alg) == alg]


def _verified_payload(token: str, jwks: JWKSet, algs: Iterable[str]) -> tuple[dict, dict]:
    """Check the JWS signature with a key from ``jwks``; return (header, claims)."""
    jws = JWS()
    try:
        jws.deserialize(token)
        header = dict(jws.jose_header)
    except (JWException, ValueError) as exc:
        raise IdTokenError("malformed", str(exc)) from exc
    alg = header.get("alg")
    if alg not in set(algs) or alg not in ASYMMETRIC_ALGS:
        raise IdTokenError("bad_alg", f"alg {alg!r} not accepted")
    candidates = _signing_key(jwks, header)
    if not candidates:
        raise IdTokenError("unknown_key", f"no {alg} key with kid {header.get('kid')!r} in the JWKS")
    for key in candidates:
        try:
            jws.verify(key, alg=alg)
        except JWException:
            continue
        try:
            claims = json.loads(jws.payload)
        except ValueError as exc:
            raise IdTokenError("malformed", "payload is not JSON") from exc
        if not isinstance(claims, dict):
            raise IdTokenError("malformed", "payload is not a JSON object")
        return header, claims
    raise IdTokenError("bad_signature", "signature does not verify")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IdTokenError(f"bad_{name}", f"{name} missing or not a number")
    return value


def _check_audience(claims: Mapping[str, Any], client_id: str) -> None:
    """OIDC Core §3.1.3.7 items 3–5: aud contains us; several audiences need azp == us."""
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise IdTokenError("bad_aud", f"aud {aud!r} does not contain the client")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise IdTokenError("bad_azp", f"azp {azp!r}")


def _check_times(claims: Mapping[str, Any], now: float, leeway: int, max_age: int | None) -> None:
    if _number(claims, "exp") + leeway < now:
        raise IdTokenError("expired", "exp is in the past")
    if _number(claims, "iat") - leeway > now:
        raise IdTokenError("bad_iat", "iat is in the future")
    if "auth_time" in claims or max_age is not None:
        auth_time = _number(claims, "auth_time")
        if auth_time - leeway > now:
            raise IdTokenError("bad_auth_time", "auth_time is in the future")
        if max_age is not None and auth_time + max_age + leeway < now:
            raise IdTokenError("bad_auth_time", "auth_time older than max_age")


def _check_auth_claims(claims: Mapping[str, Any]) -> None:
    """PROTOCOL.md §6: every ID token has acr, auth_time and amr."""
    _number(claims, "auth_time")
    if not isinstance(claims.get("acr"), str) or not claims["acr"]:
        raise IdTokenError("bad_acr", "acr missing")
    amr = claims.get("amr")
    if not isinstance(amr, list) or not amr or not all(isinstance(v, str) for v in amr):
        raise IdTokenError("bad_amr", "amr missing or not a list of strings")


def validate_id_token(
    id_token: str,
    *,
    jwks: JWKSet,
    issuer: str,
    client_id: str,
    nonce: str | None,
    access_token: str | None = None,
    algs: Iterable[str] = ASYMMETRIC_ALGS,
    max_age: int | None = None,
    require_at_hash: bool = False,
    require_auth_claims: bool = True,
    now: float | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> tuple[dict, dict]:
    """Validate an ID token as OIDC Core §3.1.3.7 asks of an RP; return (header, claims).

    ``nonce=None`` skips the nonce check (refresh responses, §12.2); ``at_hash`` is checked
    whenever present and ``access_token`` is given (required only with ``require_at_hash``:
    Core makes it optional in the code flow).
    """
    header, claims = _verified_payload(id_token, jwks, algs)
    now = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise IdTokenError("bad_iss", f"iss {claims.get('iss')!r} != {issuer!r}")
    _check_audience(claims, client_id)
    if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise IdTokenError("bad_sub", "sub missing or longer than 255")
    _check_times(claims, now, leeway, max_age)
    if nonce is not None and claims.get("nonce") != nonce:
        raise IdTokenError("bad_nonce", "nonce does not match the request")
    if require_auth_claims:
        _check_auth_claims(claims)
    if "at_hash" in claims and access_token is not None:
        if claims["at_hash"] != token_hash(access_token, header["alg"]):
            raise IdTokenError("bad_at_hash", "at_hash does not match the access token")
    elif require_at_hash:
        raise IdTokenError("bad_at_hash", "at_hash missing")
    return header, claims


# HTML pages --------------------------------------------------------------------------------
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
})


@dataclass
class Element:
    """An element carrying a ``data-action`` or ``data-role`` hook, with its text."""

    tag: str
    attrs: dict[str, str | None]
    text: str = ""


@dataclass
class FormField:
    tag: str
    type: str
    name: str
    value: str
    checked: bool


@dataclass
class Form:
    """A form as a browser sees it: enough to submit it as a browser would."""

    action: str
    method: str
    fields: list[FormField] = field(default_factory=list)

    def hidden(self) -> dict[str, str]:
        return {f.name: f.value for f in self.fields if f.type == "hidden"}

    def buttons(self, name: str) -> list[str]:
        return [f.value for f in self.fields if f.name == name and f.type == "submit"]

    def has(self, name: str, type_: str | None = None) -> bool:
        return any(f.name == name and (type_ is None or f.type == type_) for f in self.fields)

    def submission(self, button: tuple[str, str] | None = None, **overrides: str | None) -> list[tuple[str, str]]:
        """The pairs a browser posts (HTML §4.10.21.4): hidden/text inputs, checked boxes, the
        clicked button; ``overrides`` replace a field (None removes it)."""
        pairs: list[tuple[str, str]] = []
        for f in self.fields:
            if not f.name or f.name in overrides or f.type in ("submit", "button", "reset", "image", "file"):
                continue
            if f.type in ("checkbox", "radio") and not f.checked:
                continue
            pairs.append((f.name, f.value))
        pairs += [(k, v) for k, v in overrides.items() if v is not None]
        if button is not None:
            pairs.append(button)
        return pairs


class PageParser(HTMLParser):
    """Collect forms and ``data-action`` / ``data-role`` hooks from an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.hooks: list[Element] = []
        self._stack: list[str] = []
        self._open: list[tuple[int, Element]] = []
        self._form: Form | None = None

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attr_list)
        if tag == "form":
            self._form = Form(attrs.get("action") or "", (attrs.get("method") or "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            type_ = (attrs.get("type") or "text").lower()
            default = "on" if type_ in ("checkbox", "radio") else ""
            self._form.fields.append(
                FormField("input", type_, attrs.get("name") or "", attrs.get("value") or default, "checked" in attrs)
            )
        elif tag == "button" and self._form is not None:
            type_ = (attrs.get("type") or "submit").lower()
            self._form.fields.append(
                FormField("button", type_, attrs.get("name") or "", attrs.get("value") or "", False)
            )
        element = None
        if "data-action" in attrs or "data-role" in attrs:
            element = Element(tag, attrs)
            self.hooks.append(element)
        if tag not in _VOID:
            self._stack.append(tag)
            if element is not None:
                self._open.append((len(self._stack), element))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass
            self._open = [(depth, el) for depth, el in self._open if depth <= len(self._stack)]

    def handle_data(self, data: str) -> None:
        for _, element in self._open:
            element.text += data

    def hook(self, attribute: str, value: str) -> Element | None:
        """The first element with ``data-<attribute>="<value>"`` (e.g. ``action``, ``passkey``)."""
        for element in self.hooks:
            if element.attrs.get(f"data-{attribute}") == value:
                return element
        return None


def parse_page(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser


@dataclass
class ConsentForm:
    """The consent form of PROTOCOL.md §4 step 6."""

    form: Form
    txn: str
    csrf_token: str
    decisions: list[str]
    has_remember: bool

    @property
    def action(self) -> str:
        return self.form.action

    def submission(self, decision: str, *, remember: bool = True) -> list[tuple[str, str]]:
        """What the browser posts when the person clicks ``decision`` (remember=1 if offered)."""
        remember_value = "1" if remember and self.has_remember else None
        return self.form.submission(("decision", decision), remember=remember_value)


def parse_consent_form(html: str) -> ConsentForm:
    """Find the ``<form method="post" action="/consent">`` and its hidden ``txn``/``csrf_token``."""
    for form in parse_page(html).forms:
        if form.method == "post" and urlsplit(form.action).path.endswith("/consent"):
            hidden = form.hidden()
            if "txn" not in hidden or "csrf_token" not in hidden:
                raise BrowserFlowError("consent form lacks hidden txn or csrf_token")
            return ConsentForm(
                form=form,
                txn=hidden["txn"],
                csrf_token=hidden["csrf_token"],
                decisions=form.buttons("decision"),
                has_remember=form.has("remember", "checkbox"),
            )
    raise BrowserFlowError("no POST form to /consent on the page")


# the browser ---------------------------------------------------------------------------------
def origin_of(url: str) -> str:
    """scheme://host[:port], without a default port."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _redirect_target(response: requests.Response, url: str) -> str | None:
    if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
        return urljoin(url, response.headers["Location"])
    return None


def _get(browser: requests.Session, url: str, timeout: float) -> requests.Response:
    return browser.get(url, allow_redirects=False, timeout=timeout)


def login_status(browser: requests.Session, base_url: str, txn: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """``GET /login/status?txn=`` as the cross-device page polls it (PROTOCOL.md §4 step 5)."""
    url = f"{base_url.rstrip('/')}/login/status?{urlencode({'txn': txn})}"
    return _checked(browser.get(url, headers={"Accept": "application/json"}, timeout=timeout))


def _wait_authenticated(browser: requests.Session, base_url: str, txn: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = login_status(browser, base_url, txn)
        if status.get("status") == "authenticated":
            return status["next"]
        if status.get("status") != "pending" or time.monotonic() > deadline:
            raise BrowserFlowError(f"cross-device login ended {status!r}")
        time.sleep(0.05)


def _passkey_step(
    browser: requests.Session,
    url: str,
    wallet: Wallet,
    authenticator: SoftAuthenticator | Enrolled,
    *,
    same_device: bool,
    base_url: str,
    timeout: float,
) -> str:
    """The /login page: check its hooks, let the wallet sign, return where it leads."""
    response = _get(browser, url, timeout)
    target = _redirect_target(response, url)
    if target is not None:
        return target
    if response.status_code != 200:
        raise BrowserFlowError(f"/login answered {response.status_code}", response)
    page = parse_page(response.text)
    if page.hook("action", "passkey") is None:
        raise BrowserFlowError('/login page has no data-action="passkey" element', response)
    txn = dict(parse_qsl(urlsplit(url).query)).get("txn")
    if not txn:
        raise BrowserFlowError(f"no txn in {url}")
    answer = wallet.login(txn, authenticator=authenticator)
    if same_device:
        return urljoin(url, answer["next"])
    return urljoin(url, _wait_authenticated(browser, base_url, txn, timeout))


def _consent_step(
    browser: requests.Session, url: str, consent: str | None, remember: bool, timeout: float
) -> str:
    """The consent page: submit it as the browser would; return the redirect it answers."""
    response = _get(browser, url, timeout)
    target = _redirect_target(response, url)
    if target is not None:
        return target
    if response.status_code != 200:
        raise BrowserFlowError(f"/consent answered {response.status_code}", response)
    if consent is None:
        raise BrowserFlowError("consent page shown although consent=None expected none", response)
    form = parse_consent_form(response.text)
    posted = browser.post(
        urljoin(url, form.action),
        data=form.submission(consent, remember=remember),
        allow_redirects=False,
        timeout=timeout,
    )
    target = _redirect_target(posted, url)
    if target is None:
        raise BrowserFlowError(f"POST /consent answered {posted.status_code}, not a redirect", posted)
    return target


def browser_login(
    browser: requests.Session,
    base_url: str,
    location: str,
    wallet: Wallet,
    authenticator: SoftAuthenticator | Enrolled,
    *,
    consent: str | None = "allow",
    remember: bool = True,
    redirect_uri: str | None = None,
    same_device: bool = True,
    max_steps: int = 10,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Drive the browser from the authorization redirect to the RP callback; return its URL.

    Same-device (default): the wallet uses the *browser's* session, since only the browser
    that opened the transaction gets the IdP session. ``same_device=False``: the wallet
    keeps its own session (the phone) and the browser polls ``/login/status``.
    ``consent=None`` asserts no consent page appears (remembered consent). The walk ends
    at the first URL outside the IdP's origin (or under ``redirect_uri`` when given),
    which is returned unfollowed.
    """
    base_url = base_url.rstrip("/")
    base_path = urlsplit(base_url).path
    idp_origin = origin_of(base_url)
    signer = wallet if (not same_device or wallet.session is browser) else wallet.with_session(browser)
    url = urljoin(base_url + "/", location)
    for _ in range(max_steps):
        at_rp = url.split("?")[0].startswith(redirect_uri) if redirect_uri else origin_of(url) != idp_origin
        if at_rp:
            return url
        path = urlsplit(url).path
        if path == base_path + "/login":
            url = _passkey_step(
                browser, url, signer, authenticator, same_device=same_device, base_url=base_url, timeout=timeout
            )
        elif path == base_path + "/consent":
            url = _consent_step(browser, url, consent, remember, timeout)
        else:
            response = _get(browser, url, timeout)
            target = _redirect_target(response, url)
            if target is None:
                raise BrowserFlowError(f"{url} answered {response.status_code}, not a redirect", response)
            url = target
    raise BrowserFlowError(f"no redirect to the RP within {max_steps} steps")


# the relying party -----------------------------------------------------------------------------
@dataclass
class AuthorizationRequest:
    """What the RP remembers about one authorization request, keyed by ``state``."""

    url: str
    state: str
    nonce: str | None
    code_verifier: str | None
    redirect_uri: str
    scope: str
    max_age: int | None = None


@dataclass
class TokenResult:
    """A token response and its validated ID token."""

    token: dict
    claims: dict
    header: dict
    request: AuthorizationRequest | None = None

    @property
    def access_token(self) -> str:
        return self.token["access_token"]

    @property
    def id_token(self) -> str | None:
        return self.token.get("id_token")

    @property
    def refresh_token(self) -> str | None:
        return self.token.get("refresh_token")

    @property
    def sub(self) -> str:
        return self.claims["sub"]


def discover(base_url: str, session: requests.Session, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Fetch the discovery document; its ``issuer`` must equal the URL it came from (Discovery §4.3)."""
    base_url = base_url.rstrip("/")
    document = _checked(session.get(base_url + DISCOVERY_PATH, timeout=timeout))
    if not isinstance(document, dict):
        raise RPError(200, {"error": "bad_discovery", "error_description": "not a JSON object"})
    if document.get("issuer") != base_url:
        raise RPError(200, {"error": "issuer_mismatch", "error_description": f"issuer {document.get('issuer')!r}"})
    return document


def post_registration(
    base_url: str,
    body: Mapping[str, Any],
    *,
    session: requests.Session,
    registration_token: str | None = None,
    provider: Mapping[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> requests.Response:
    """POST raw client metadata to the registration endpoint; for negative registration tests."""
    provider = provider or discover(base_url, session, timeout=timeout)
    headers = {"Accept": "application/json"}
    if registration_token:
        headers["Authorization"] = f"Bearer {registration_token}"
    return session.post(provider["registration_endpoint"], json=dict(body), headers=headers, timeout=timeout)


def generate_client_key(key_type: str = "EC") -> JWK:
    """A fresh private_key_jwt key: P-256 (ES256) or RSA-2048 (RS256), with a kid."""
    kid = secrets.token_urlsafe(8)
    if key_type == "EC":
        return JWK.generate(kty="EC", crv="P-256", kid=kid, use="sig", alg="ES256")
    if key_type == "RSA":
        return JWK.generate(kty="RSA", size=2048, kid=kid, use="sig", alg="RS256")
    raise ValueError("key_type must be EC or RSA")


def _client_secret_basic(client: Any, method: str, uri: str, headers: dict, body: str) -> tuple:
    """RFC 6749 §2.3.1: form-urlencode id and secret before base64 (authlib's default skips it)."""
    user = quote(client.client_id, safe="")
    password = quote(client.client_secret or "", safe="")
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers["Authorization"] = f"Basic {credentials}"
    return uri, headers, body


class RelyingParty:
    """One registered client of the IdP, with its own HTTP session for back-channel calls.

    Build it with :meth:`register` (dynamic registration) or directly from a discovery
    document and a client record. Pending authorization requests are kept by ``state``
    so several logins may be in flight (the load benchmark shares one RP across threads;
    every token call uses a fresh authlib session over the shared connection pool).
    """

    def __init__(
        self,
        provider: Mapping[str, Any],
        client: Mapping[str, Any],
        *,
        redirect_uri: str | None = None,
        session: requests.Session | None = None,
        signing_key: JWK | None = None,
        scope: str = "openid profile",
        assertion_audience: str = "issuer",
        require_at_hash: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        dpop: DPoPKey | None = None,
    ) -> None:
        self.provider = dict(provider)
        self.client = dict(client)
        self.client_id: str = client["client_id"]
        self.client_secret: str | None = client.get("client_secret")
        self.auth_method: str = client.get("token_endpoint_auth_method", "client_secret_basic")
        self.redirect_uri = redirect_uri or client["redirect_uris"][0]
        self.session = session or requests.Session()
        self.signing_key = signing_key
        self.scope = scope
        self.assertion_audience = assertion_audience
        self.require_at_hash = require_at_hash
        self.timeout = timeout
        self.last_request: AuthorizationRequest | None = None
        self._pending: dict[str, AuthorizationRequest] = {}
        self._jwks: JWKSet | None = None
        # RFC 9449: financial clients must send DPoP proofs (FAPI 2.0); others may
        self.dpop = dpop or (DPoPKey() if client.get("rp_category") == "financial" else None)

    # construction ----------------------------------------------------------------------
    @classmethod
    def register(
        cls,
        base_url: str,
        *,
        redirect_uri: str,
        rp_category: str,
        session: requests.Session | None = None,
        registration_token: str | None = None,
        token_endpoint_auth_method: str = "client_secret_basic",
        key_type: str = "EC",
        signing_key: JWK | None = None,
        scope: str = "openid profile",
        **metadata: Any,
    ) -> RelyingParty:
        """Register dynamically (OIDC Registration 1.0 §3) and return the client.

        ``metadata`` is merged over the defaults (e.g. ``redirect_uris``, ``jwks_uri``,
        ``sector_identifier_uri``, ``client_name``). For ``private_key_jwt`` a key is
        generated (``key_type`` EC or RSA) unless given, and its public JWK is sent as
        ``jwks`` unless ``metadata`` names ``jwks`` or ``jwks_uri`` (see :meth:`public_jwks`).
        """
        session = session or requests.Session()
        provider = discover(base_url, session)
        body: dict[str, Any] = {
            "redirect_uris": [redirect_uri],
            "rp_category": rp_category,
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "client_name": f"Test {rp_category} RP",
        }
        if token_endpoint_auth_method == "private_key_jwt":
            signing_key = signing_key or generate_client_key(key_type)
            if "jwks" not in metadata and "jwks_uri" not in metadata:
                body["jwks"] = {"keys": [signing_key.export_public(as_dict=True)]}
        body.update(metadata)
        response = post_registration(
            base_url, body, session=session, registration_token=registration_token, provider=provider
        )
        client = _checked(response)
        client.setdefault("token_endpoint_auth_method", token_endpoint_auth_method)
        return cls(
            provider, client, redirect_uri=redirect_uri, session=session, signing_key=signing_key, scope=scope
        )

    @property
    def issuer(self) -> str:
        return self.provider["issuer"]

    @property
    def rp_category(self) -> str | None:
        return self.client.get("rp_category")

    def public_jwks(self) -> dict:
        """The client's public JWK Set (to serve at a ``jwks_uri`` on an RpHost)."""
        if self.signing_key is None:
            raise ValueError("this client has no signing key")
        return {"keys": [self.signing_key.export_public(as_dict=True)]}

    # client authentication ----------------------------------------------------------------
    def client_assertion(self, audience: str | None = None, **claims: Any) -> str:
        """A private_key_jwt assertion (RFC 7523 §3); ``claims`` override any member (tests)."""
        if self.signing_key is None:
            raise ValueError("private_key_jwt needs a signing key")
        now = int(time.time())
        payload = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience or self.issuer,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + 60,
        }
        payload.update(claims)
        header = {"alg": self.signing_key.get("alg", "ES256"), "kid": self.signing_key.get("kid"), "typ": "JWT"}
        token = JWT(header=header, claims=payload)
        token.make_signed_token(self.signing_key)
        return token.serialize()

    def _private_key_jwt(self, client: Any, method: str, uri: str, headers: dict, body: str) -> tuple:
        audience = self.issuer if self.assertion_audience == "issuer" else (
            uri.split("?")[0] if self.assertion_audience == "endpoint" else self.assertion_audience
        )
        pairs = [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", self.client_assertion(audience))]
        return uri, headers, add_params_to_qs(body or "", pairs)

    def oauth_session(self, on_response: Callable[[requests.Response], None] | None = None) -> OAuth2Session:
        """A fresh authlib client session sharing this RP's connection pool and TLS settings."""
        oauth = OAuth2Session(
            self.client_id,
            self.client_secret,
            token_endpoint_auth_method=self.auth_method,
            revocation_endpoint_auth_method=self.auth_method,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint=self.provider["token_endpoint"],
        )
        oauth.register_client_auth_method(("client_secret_basic", _client_secret_basic))
        oauth.register_client_auth_method(("private_key_jwt", self._private_key_jwt))
        for prefix, adapter in self.session.adapters.items():
            oauth.mount(prefix, adapter)
        oauth.verify = self.session.verify
        oauth.cert = self.session.cert
        if on_response is not None:
            def keep(response: requests.Response) -> requests.Response:
                on_response(response)
                return response

            oauth.register_compliance_hook("access_token_response", keep)
            oauth.register_compliance_hook("refresh_token_response", keep)
        return oauth

    def client_auth(self) -> requests.auth.AuthBase:
        """This client's token-endpoint authentication as a requests auth object."""
        return self.oauth_session().client_auth(self.auth_method)

    # authorization ---------------------------------------------------------------------
    def authorization_url(
        self,
        *,
        scope: str | None = None,
        pkce: str | None = "S256",
        nonce: str | bool = True,
        state: str | None = None,
        claims: Mapping[str, Any] | str | None = None,
        par: bool | None = None,
        **extra: Any,
    ) -> tuple[str, str, str | None, str | None]:
        """Build an authentication request; returns (url, state, nonce, code_verifier).

        ``pkce`` is "S256", "plain" (to see it refused) or None; ``nonce`` True for a
        random one, False for none; ``claims`` a dict sent as the JSON ``claims``
        parameter; ``par`` pushes the request (RFC 9126) first, by default when the
        category or client requires it. ``extra`` are more request parameters
        (``prompt``, ``max_age``, ``ui_locales``, ``acr_values``, ``redirect_uri``…).
        """
        scope = scope or self.scope
        state = state or secrets.token_urlsafe(24)
        nonce_value = secrets.token_urlsafe(24) if nonce is True else (nonce or None)
        verifier = secrets.token_urlsafe(48) if pkce else None
        params: dict[str, Any] = {k: (str(v) if isinstance(v, int) else v) for k, v in extra.items()}
        if nonce_value is not None:
            params["nonce"] = nonce_value
        if claims is not None:
            params["claims"] = claims if isinstance(claims, str) else json.dumps(claims)
        if pkce == "plain":
            params.update(code_challenge=verifier, code_challenge_method="plain")
        redirect_uri = params.setdefault("redirect_uri", self.redirect_uri)
        oauth = self.oauth_session()
        url, _ = oauth.create_authorization_url(
            self.provider["authorization_endpoint"],
            state=state,
            code_verifier=verifier if pkce == "S256" else None,
            scope=scope,
            **params,
        )
        if par if par is not None else self._requires_par():
            url = self._push(url)
        max_age = int(extra["max_age"]) if "max_age" in extra else None
        request = AuthorizationRequest(url, state, nonce_value, verifier, redirect_uri, scope, max_age)
        self._pending[state] = request
        self.last_request = request
        return url, state, nonce_value, verifier

    def _requires_par(self) -> bool:
        return bool(
            self.client.get("require_pushed_authorization_requests")
            or self.provider.get("require_pushed_authorization_requests")
            or self.rp_category == "financial"
        )

    def _push(self, url: str) -> str:
        """RFC 9126: POST the request's parameters with client authentication; use request_uri."""
        endpoint = self.provider.get("pushed_authorization_request_endpoint")
        if not endpoint:
            raise RPError(0, {"error": "no pushed_authorization_request_endpoint in discovery"})
        params = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if self.dpop is not None:
            response = send_dpop(self.session, self.dpop, "POST", endpoint, data=params, auth=self.client_auth(),
                                 timeout=self.timeout)
        else:
            response = self.session.post(endpoint, data=params, auth=self.client_auth(), timeout=self.timeout)
        answer = _checked(response)
        query = urlencode({"client_id": self.client_id, "request_uri": answer["request_uri"]})
        return f"{self.provider['authorization_endpoint']}?{query}"

    def start(self, browser: requests.Session, **extra: Any) -> str:
        """Send ``browser`` to the authorization endpoint; return where the IdP redirects it.

        That is ``/login?txn=…`` normally, or the RP callback for a silent login or an
        error redirect. A non-redirect (the IdP's error page) raises :class:`RPError`.
        """
        url, *_ = self.authorization_url(**extra)
        response = browser.get(url, allow_redirects=False, timeout=self.timeout)
        target = _redirect_target(response, url)
        if target is None:
            raise RPError(response.status_code, response.text, response)
        return target

    # callback and tokens ----------------------------------------------------------------
    def parse_callback(self, callback_url: str) -> tuple[AuthorizationRequest, dict[str, str]]:
        """Check the authorization response (state, redirect URI, RFC 9207 ``iss``).

        Returns the request it answers and its parameters; an ``error`` response raises
        :class:`AuthorizationError` carrying the IdP's ``error`` (e.g. ``access_denied``).
        """
        parts = urlsplit(callback_url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        request = self._pending.pop(params.get("state", ""), None)
        if request is None:
            raise AuthorizationError("state_mismatch", "unknown or missing state", params)
        if callback_url.split("?")[0] != request.redirect_uri.split("?")[0]:
            raise AuthorizationError("redirect_mismatch", f"callback {callback_url!r}", params)
        if params.get("iss") != self.issuer:
            raise AuthorizationError("iss_mismatch", f"iss {params.get('iss')!r} (RFC 9207)", params)
        if "error" in params:
            raise AuthorizationError(params["error"], params.get("error_description"), params)
        if not params.get("code"):
            raise AuthorizationError("missing_code", "no code in the response", params)
        return request, params

    def finish(self, callback_url: str) -> TokenResult:
        """Check the callback, exchange the code and validate the ID token."""
        request, params = self.parse_callback(callback_url)
        return self.exchange(params["code"], request)

    def exchange(self, code: str, request: AuthorizationRequest, **extra: Any) -> TokenResult:
        """The token request (authorization_code with the PKCE verifier) via authlib."""
        def call(oauth: OAuth2Session, headers: dict[str, str]) -> Any:
            return oauth.fetch_token(
                self.provider["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                redirect_uri=request.redirect_uri,
                code_verifier=request.code_verifier,
                timeout=self.timeout,
                headers=headers,
                **extra,
            )

        return self._token_result(self._token_call(call), request)

    def _token_call(self, call: Callable[[OAuth2Session, dict[str, str]], Any]) -> dict:
        """One token-endpoint call through authlib, with a DPoP proof when this RP has a key,
        retried once when the IdP demands a nonce (RFC 9449 §8)."""
        for attempt in range(2):
            responses: list[requests.Response] = []
            oauth = self.oauth_session(responses.append)
            headers = {"Accept": "application/json",
                       "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}
            if self.dpop is not None:
                headers["DPoP"] = self.dpop.proof("POST", self.provider["token_endpoint"])
            try:
                token = call(oauth, headers)
            except OAuthError as exc:
                response = responses[-1] if responses else None
                if self.dpop is not None and response is not None and self.dpop.remember_nonce(response) \
                        and attempt == 0:
                    continue
                status = response.status_code if response is not None else 0
                raise RPError(status, {"error": exc.error, "error_description": exc.description}, response) from exc
            if self.dpop is not None and responses:
                self.dpop.remember_nonce(responses[-1])
            return dict(token)
        raise AssertionError("unreachable")

    def _token_result(self, token: dict, request: AuthorizationRequest | None) -> TokenResult:
        expected = "dpop" if self.dpop is not None else "bearer"
        if str(token.get("token_type", "")).lower() != expected:
            raise RPError(200, {"error": "bad_token_type", "token": token})
        if "id_token" not in token:
            if request is not None and "openid" in request.scope.split():
                raise IdTokenError("missing", "no id_token in the token response")
            return TokenResult(token, {}, {}, request)
        header, claims = self.validate_id_token(
            token["id_token"],
            nonce=request.nonce if request else None,
            access_token=token.get("access_token"),
            max_age=request.max_age if request else None,
        )
        return TokenResult(token, claims, header, request)

    def token_request(
        self, data: Mapping[str, Any] | list[tuple[str, str]], *, authenticate: bool = True
    ) -> requests.Response:
        """POST a raw form to the token endpoint (client auth applied); for negative tests."""
        return self.session.post(
            self.provider["token_endpoint"],
            data=data,
            auth=self.client_auth() if authenticate else None,
            headers={"Accept": "application/json"},
            timeout=self.timeout,
        )

    def refresh(self, refresh_token: str, **extra: Any) -> TokenResult:
        """Refresh grant; an ID token in the answer is validated (OIDC Core §12.2)."""
        def call(oauth: OAuth2Session, headers: dict[str, str]) -> Any:
            return oauth.refresh_token(self.provider["token_endpoint"], refresh_token=refresh_token,
                                       timeout=self.timeout, headers=headers, **extra)

        return self._token_result(self._token_call(call), None)

    def revoke(self, token: str, token_type_hint: str | None = None) -> requests.Response:
        """RFC 7009 revocation; returns the raw response (200 even for unknown tokens)."""
        return self.oauth_session().revoke_token(
            self.provider["revocation_endpoint"], token=token, token_type_hint=token_type_hint, timeout=self.timeout
        )

    def introspect(self, token: str, token_type_hint: str | None = None) -> dict:
        """RFC 7662 introspection as this client."""
        response = self.oauth_session().introspect_token(
            self.provider["introspection_endpoint"], token=token, token_type_hint=token_type_hint, timeout=self.timeout
        )
        return _checked(response)

    def logout_url(
        self,
        id_token_hint: str | None = None,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
        **extra: str,
    ) -> str:
        """RP-Initiated Logout 1.0 request URL at ``end_session_endpoint``."""
        params = {"client_id": self.client_id, **extra}
        optional = {
            "id_token_hint": id_token_hint, "post_logout_redirect_uri": post_logout_redirect_uri, "state": state,
        }
        params.update({name: value for name, value in optional.items() if value is not None})
        return f"{self.provider['end_session_endpoint']}?{urlencode(params)}"

    # keys and ID tokens ------------------------------------------------------------------
    def jwks(self, *, refresh: bool = False) -> JWKSet:
        """The IdP's JWKS from discovery's ``jwks_uri`` (cached; ``refresh`` refetches)."""
        if self._jwks is None or refresh:
            text = self.session.get(self.provider["jwks_uri"], timeout=self.timeout)
            self._jwks = JWKSet.from_json(json.dumps(_checked(text)))
        return self._jwks

    def id_token_algs(self) -> set[str]:
        """The algs to accept: the client's registered one, else what discovery offers."""
        registered = self.client.get("id_token_signed_response_alg")
        if registered:
            return {registered} & ASYMMETRIC_ALGS
        # Discovery 1.0 §3: RS256 is the default when the provider lists nothing.
        return set(self.provider.get("id_token_signing_alg_values_supported", ["RS256"])) & ASYMMETRIC_ALGS

    def validate_id_token(
        self, id_token: str, *, nonce: str | None, access_token: str | None = None, max_age: int | None = None
    ) -> tuple[dict, dict]:
        """Validate with the cached JWKS, refetching once for an unknown kid (key rotation)."""
        def run(jwks: JWKSet) -> tuple[dict, dict]:
            return validate_id_token(
                id_token,
                jwks=jwks,
                issuer=self.issuer,
                client_id=self.client_id,
                nonce=nonce,
                access_token=access_token,
                algs=self.id_token_algs(),
                max_age=max_age,
                require_at_hash=self.require_at_hash,
            )

        try:
            return run(self.jwks())
        except IdTokenError as exc:
            if exc.reason != "unknown_key":
                raise
            return run(self.jwks(refresh=True))

    def userinfo(self, access_token: str, method: str = "GET") -> dict:
        """Call the UserInfo endpoint (OIDC Core §5.3.1) the three ways RFC 6750 allows.

        ``method``: "GET" or "POST-header" (Bearer header), "POST-body" (form parameter).
        A signed (``application/jwt``) answer is verified and its claims returned.
        """
        endpoint = self.provider["userinfo_endpoint"]
        bearer = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if self.dpop is not None and method != "POST-body":  # RFC 9449 §7: the DPoP scheme and a proof
            response = send_dpop(self.session, self.dpop, "GET" if method == "GET" else "POST", endpoint,
                                 access_token=access_token, headers={"Accept": "application/json"},
                                 timeout=self.timeout)
        elif method == "GET":
            response = self.session.get(endpoint, headers=bearer, timeout=self.timeout)
        elif method == "POST-header":
            response = self.session.post(endpoint, headers=bearer, timeout=self.timeout)
        elif method == "POST-body":
            response = self.session.post(endpoint, data={"access_token": access_token}, timeout=self.timeout)
        else:
            raise ValueError("method must be GET, POST-header or POST-body")
        if response.ok and response.headers.get("Content-Type", "").startswith("application/jwt"):
            _, claims = _verified_payload(response.text.strip(), self.jwks(), self.id_token_algs())
            return claims
        return _checked(response)
