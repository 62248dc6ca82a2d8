"""Four demo relying parties, one per category, that use the IdP exactly as a real RP would.

Each registers itself through Dynamic Client Registration on first use (kept in
``keys/demo-rps.json``, mode 0600, re-registered when the database no longer knows it),
sends the browser to ``/authorize`` with PKCE S256, a nonce and a state, comes back to
``/demo/rp/<category>/callback``, checks ``state`` and RFC 9207 ``iss``, exchanges the
code at the token endpoint with its client authentication, validates the ID token
against the published JWKS and fetches UserInfo. The bank uses ``private_key_jwt``, pushed
authorization requests and DPoP-bound tokens (a fresh proof key per login), as its category
policy demands (FAPI 2.0).

Pairwise ``sub`` values depend on the *host* of an RP's redirect URI (its sector). On one
machine only two loopback names exist, so the city hall and the hospital live on the
issuer's host and the bank and the railway on the other loopback name (``127.0.0.1`` ↔
``localhost``): within a sector the ``sub`` is the same, across sectors it differs.

The back-channel calls go over HTTP to the issuer itself; the views hold no database
transaction meanwhile, so SQLite's write lock is never held across them.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode, urlsplit

import requests
from flask_babel import lazy_gettext
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from idp.settings import Settings
from idp.storage.models import Client

TIMEOUT = 15
REGISTRY_FILE = "demo-rps.json"
VERIFIED_CLAIMS_REQUEST = {"verified_claims": {
    "verification": {"trust_framework": None},
    "claims": {"name": None, "birthdate": None, "address": None, "gender": None},
}}


@dataclass(frozen=True)
class DemoRP:
    category: str
    name_en: str
    name_ja: str
    scope: str
    purpose_en: str
    purpose_ja: str
    description: Any
    other_host: bool = False
    auth_method: str = "client_secret_basic"
    claims: dict[str, Any] | None = None

    def name(self, locale: str) -> str:
        return self.name_ja if locale == "ja" else self.name_en

    def purpose(self, locale: str) -> str:
        return self.purpose_ja if locale == "ja" else self.purpose_en


DEMO_RPS: dict[str, DemoRP] = {rp.category: rp for rp in (
    DemoRP("municipal", "Demo City Hall", "デモ市役所", "openid profile address",
           "To issue a copy of your residence record online", "住民票の写しをオンラインで交付するため",
           lazy_gettext("A city service: may receive your name, address, date of birth and gender.")),
    DemoRP("medical", "Demo General Hospital", "デモ総合病院", "openid profile",
           "To match you with your patient record", "診察券と診療記録を照合するため",
           lazy_gettext("A hospital: may receive your name, date of birth and gender, never your address.")),
    DemoRP("financial", "Demo Bank", "デモ銀行", "openid profile address",
           "To verify your identity when you open an account (anti-money-laundering law)",
           "口座開設時の本人確認のため（犯罪収益移転防止法）",
           lazy_gettext("A bank: receives verified identity for anti-money-laundering checks; "
                        "uses signed client authentication and pushed requests."),
           other_host=True, auth_method="private_key_jwt", claims={"userinfo": VERIFIED_CLAIMS_REQUEST}),
    DemoRP("transport", "Demo Railway", "デモ鉄道", "openid age",
           "To apply child or senior fares", "こども運賃・シニア運賃を適用するため",
           lazy_gettext("A railway: receives only whether you are over 18 and over 65, never your name or birth date."),
           other_host=True),
)}


class DemoRPError(Exception):
    """A step of the demo RP's flow failed; ``step`` names it for the result page."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


# ---- where each demo RP lives ----

def other_loopback(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else "localhost"


def rp_origin(settings: Settings, rp: DemoRP) -> str:
    parts = urlsplit(settings.issuer)
    host = parts.hostname or "localhost"
    if rp.other_host:
        host = other_loopback(host)
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def sector_of(settings: Settings, rp: DemoRP) -> str:
    """The pairwise sector of this demo RP: the host of its redirect URI (OIDC Core §8.1)."""
    return urlsplit(rp_origin(settings, rp)).hostname or ""


def rp_url(settings: Settings, rp: DemoRP, path: str = "") -> str:
    return f"{rp_origin(settings, rp)}/demo/rp/{rp.category}/{path}"


def redirect_uri(settings: Settings, rp: DemoRP) -> str:
    return rp_url(settings, rp, "callback")


# ---- registration, once, kept on disk ----

@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    temporary.replace(path)


def _known(services: Any, record: dict[str, Any], settings: Settings, rp: DemoRP) -> bool:
    """Is this stored registration still a client of this database, for this redirect URI?"""
    client_id = record.get("client_id")
    if not isinstance(client_id, str):
        return False
    with services.db.sessions() as session:
        row = session.get(Client, client_id)
        return row is not None and redirect_uri(settings, rp) in row.client_metadata.get("redirect_uris", [])


def registration(services: Any, rp: DemoRP) -> dict[str, Any]:
    """This demo RP's client record, registering it through ``/register`` when needed."""
    settings: Settings = services.settings
    path = settings.keys_dir / REGISTRY_FILE
    with _locked(path):
        data = _read(path)
        record = data.get(rp.category)
        if isinstance(record, dict) and _known(services, record, settings, rp):
            return record
        record = _register(settings, rp)
        data[rp.category] = record
        _write(path, data)
        return record


def _register(settings: Settings, rp: DemoRP) -> dict[str, Any]:
    body: dict[str, Any] = {
        "redirect_uris": [redirect_uri(settings, rp)],
        "rp_category": rp.category,
        "client_name": rp.name_en,
        "client_name#ja": rp.name_ja,
        "purpose": rp.purpose_en,
        "logo_uri": f"{rp_origin(settings, rp)}/static/demo/{rp.category}.svg",
        "client_uri": rp_url(settings, rp),
        "policy_uri": rp_url(settings, rp, "policy"),
        "tos_uri": rp_url(settings, rp, "terms"),
        "contacts": [f"privacy@{rp.category}.demo.example"],
        "token_endpoint_auth_method": rp.auth_method,
        "software_id": f"jp-digital-id-demo-{rp.category}",
    }
    private_jwk = None
    if rp.auth_method == "private_key_jwt":
        key = ECKey.generate_key("P-256", parameters={"kid": secrets.token_urlsafe(8), "use": "sig", "alg": "ES256"})
        private_jwk = key.as_dict(private=True)
        body["jwks"] = {"keys": [key.as_dict(private=False)]}
    headers = {"Accept": "application/json"}
    if settings.registration_token:
        headers["Authorization"] = f"Bearer {settings.registration_token}"
    answer = _call("registration", "POST", settings.url("/register"), json=body, headers=headers)
    return {"client_id": answer["client_id"], "client_secret": answer.get("client_secret"),
            "jwk": private_jwk, "redirect_uri": body["redirect_uris"][0], "registered_at": int(time.time())}


# ---- the back channel ----

def _call(step: str, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = requests.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise DemoRPError(step, f"the IdP did not answer: {exc}") from None
    return _answer(step, response)


def _answer(step: str, response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": "not_json", "error_description": response.text[:200]}
    if not 200 <= response.status_code < 300 or not isinstance(body, dict):
        raise DemoRPError(step, f"HTTP {response.status_code}: {body.get('error')}: {body.get('error_description')}"
                          if isinstance(body, dict) else f"HTTP {response.status_code}")
    return body


def _client_auth(settings: Settings, record: dict[str, Any], endpoint: str) -> tuple[dict[str, str], Any]:
    """Form fields and requests auth for this client's token endpoint authentication."""
    if record.get("jwk"):
        key = ECKey.import_key(record["jwk"])
        now = int(time.time())
        claims = {"iss": record["client_id"], "sub": record["client_id"], "aud": settings.issuer,
                  "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60}
        assertion = jwt.encode({"alg": "ES256", "kid": record["jwk"].get("kid"), "typ": "JWT"}, claims, key,
                               algorithms=["ES256"])
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}, None
    return {}, (record["client_id"], record["client_secret"])


def _token_form(settings: Settings, rp: DemoRP, record: dict[str, Any], args: dict[str, str],
                remembered: dict[str, str]) -> dict[str, Any]:
    fields, auth = _client_auth(settings, record, settings.url("/token"))
    return {"auth": auth, "data": {
        "grant_type": "authorization_code", "code": args.get("code", ""),
        "redirect_uri": redirect_uri(settings, rp), "code_verifier": remembered["verifier"], **fields}}


def _dpop_call(step: str, method: str, url: str, key: ECKey | None, request_kwargs: Any,
               access_token: str | None = None) -> dict[str, Any]:
    """A back-channel call with a DPoP proof (RFC 9449 §4) when the RP has a key, sent again
    once with the server's nonce when it asks for one (``use_dpop_nonce``, §8)."""
    if key is None:
        return _call(step, method, url, **request_kwargs())
    nonce = None
    for _ in range(2):
        kwargs = request_kwargs()
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url, "iat": int(time.time())}
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = _b64url(hashlib.sha256(access_token.encode("ascii")).digest())
        proof = jwt.encode({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}, claims, key,
                           algorithms=["ES256"])
        kwargs["headers"] = {**kwargs.get("headers", {}), "DPoP": proof}
        try:
            response = requests.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise DemoRPError(step, f"the IdP did not answer: {exc}") from None
        asked = "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "") or (
            response.status_code == 400 and "use_dpop_nonce" in response.text)
        if asked and nonce is None and response.headers.get("DPoP-Nonce"):
            nonce = response.headers["DPoP-Nonce"]
            continue
        return _answer(step, response)
    raise DemoRPError(step, "the IdP kept asking for a DPoP nonce")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def start(services: Any, rp: DemoRP, locale: str, *, prompt: str | None = None) -> tuple[str, dict[str, str]]:
    """The authorization URL to send the browser to, and what to remember in its cookie."""
    settings: Settings = services.settings
    record = registration(services, rp)
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    params: dict[str, str] = {
        "response_type": "code", "client_id": record["client_id"], "redirect_uri": redirect_uri(settings, rp),
        "scope": rp.scope, "state": state, "nonce": nonce,
        "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
        "code_challenge_method": "S256", "ui_locales": locale, "purpose": rp.purpose(locale),
    }
    if rp.claims:
        params["claims"] = json.dumps(rp.claims)
    if prompt:
        params["prompt"] = prompt
    if rp.category == "financial" or rp.auth_method == "private_key_jwt":
        fields, auth = _client_auth(settings, record, settings.url("/par"))
        pushed = _call("pushed authorization request", "POST", settings.url("/par"), data={**params, **fields},
                       auth=auth)
        url = settings.url("/authorize") + "?" + urlencode({"client_id": record["client_id"],
                                                           "request_uri": pushed["request_uri"]})
    else:
        url = settings.url("/authorize") + "?" + urlencode(params)
    return url, {"state": state, "nonce": nonce, "verifier": verifier}


@dataclass
class Result:
    id_token_header: dict[str, Any]
    id_token_claims: dict[str, Any]
    userinfo: dict[str, Any]
    token_response: dict[str, Any]


def finish(services: Any, rp: DemoRP, remembered: dict[str, str], args: dict[str, str]) -> Result:
    """Check the authorization response, exchange the code, validate the ID token, call UserInfo."""
    settings: Settings = services.settings
    if not remembered or args.get("state") != remembered.get("state"):
        raise DemoRPError("state", "the response does not answer a request this browser made here")
    if args.get("iss") != settings.issuer:
        raise DemoRPError("iss", f"unexpected issuer {args.get('iss')!r} (RFC 9207)")
    if "error" in args:
        raise DemoRPError("authorization", f"{args.get('error')}: {args.get('error_description', '')}")
    record = registration(services, rp)
    dpop_key = ECKey.generate_key("P-256") if rp.category == "financial" else None
    token = _dpop_call("token", "POST", settings.url("/token"), dpop_key, lambda: _token_form(
        settings, rp, record, args, remembered))
    if "id_token" not in token:
        raise DemoRPError("token", "no ID token in the token response")
    jwks = _call("jwks", "GET", settings.url("/jwks"))
    try:
        decoded = jwt.decode(token["id_token"], KeySet.import_key_set(jwks), algorithms=["ES256", "RS256"])
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": record["client_id"]},
            exp={"essential": True}, iat={"essential": True}, sub={"essential": True},
            nonce={"essential": True, "value": remembered["nonce"]},
        ).validate(decoded.claims)
    except Exception as exc:  # joserfc raises several types; all mean "do not trust this token"
        raise DemoRPError("id_token", f"the ID token failed validation: {exc}") from None
    scheme = "DPoP" if dpop_key is not None else "Bearer"
    userinfo = _dpop_call("userinfo", "GET", settings.url("/userinfo"), dpop_key, lambda: {"headers": {
        "Authorization": f"{scheme} {token['access_token']}", "Accept": "application/json"}},
        access_token=token["access_token"])
    if userinfo.get("sub") != decoded.claims.get("sub"):
        raise DemoRPError("userinfo", "UserInfo is about someone else (sub differs from the ID token)")
    shown = {k: ("…" if k in ("access_token", "refresh_token", "id_token") else v) for k, v in token.items()}
    return Result(dict(decoded.header), dict(decoded.claims), userinfo, shown)
