"""FAPI 2.0 Security Profile (final), authorization server: the modules of the suite's
``fapi2-security-profile-final-test-plan`` this OP's ``financial`` category answers, variant
private_key_jwt + DPoP + OpenID Connect + plain FAPI, plus the one RS256 request-object
module of ``fapi2-message-signing-final-test-plan``.

Each client is a dynamically registered ``financial`` RP with an ES256 key: it pushes its
authorization request (PAR, RFC 9126) with client authentication, sends DPoP proofs
(RFC 9449) from a key of its own, retries once when the OP demands a nonce, and calls
UserInfo with ``Authorization: DPoP`` (tests/support/rp.py and tests/support/dpop.py, not
the server's code).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import requests
from jwcrypto.jwk import JWK

from conformance import checks
from conformance.client import AuthRequest, Browser, Client, Tokens, json_body
from conformance.framework import TestRun, module
from conformance.modules.common import authorize
from tests.support.dpop import DROP, DPoPKey
from tests.support.dpop import send as send_dpop
from tests.support.rp import ASSERTION_TYPE, RelyingParty, RPError, generate_client_key

FAPI2 = "fapi2-security-profile-final-test-plan"
FAPI2_MS = "fapi2-message-signing-final-test-plan"
VARIANT = "private_key_jwt, dpop, openid_connect, plain_fapi"
PREFIX = "fapi2-security-profile-final-"
STRONG = {"ES256", "PS256", "EdDSA", "Ed25519"}
TIMEOUT = 30


def fapi_module(name: str, *, plan: str = FAPI2):  # type: ignore[no-untyped-def]
    return module(PREFIX + name, plan=plan, variant=VARIANT)


def financial_client(run: TestRun, key: JWK | None = None, **metadata: Any) -> Client:
    """A financial RP: private_key_jwt with an ES256 key, PAR and DPoP (by its category)."""
    env = run.env
    try:
        rp = RelyingParty.register(env.issuer, redirect_uri=env.callback_url(run.spec.name), rp_category="financial",
                                   session=requests.Session(), registration_token=env.registration_token,
                                   token_endpoint_auth_method="private_key_jwt",
                                   signing_key=key or generate_client_key("EC"), scope="openid profile",
                                   client_name=f"conformance {run.spec.name}", **metadata)
    except RPError as exc:
        run.fail(f"registration of a financial client failed: HTTP {exc.status} {exc.body!r}", ref="FAPI2-5.3.2.1")
    rp.timeout = TIMEOUT
    rp.assertion_audience = "issuer"  # FAPI 2.0 §5.3.2.1 item 8: the issuer as the audience
    client = Client(env, rp)
    run.cleanups.append(client.unregister)
    return client


def pushed(run: TestRun, client: Client, **extra: Any) -> AuthRequest:
    """An authentication request pushed to the PAR endpoint (the RP pushes for financial clients)."""
    try:
        extra.setdefault("scope", "openid profile")
        return client.auth_request(**extra)
    except RPError as exc:
        run.fail(f"the pushed authorization request failed: HTTP {exc.status} {exc.body!r}", ref="FAPI2-5.3.1.2")


def code_of(run: TestRun, client: Client, browser: Browser | None = None, **extra: Any) -> tuple[AuthRequest, str]:
    request = pushed(run, client, **extra)
    params = authorize(run, client, browser or Browser(run.env), request)
    run.check(params.get("iss") == run.env.issuer, "no iss in the authorization response", ref="FAPI2-5.3.1.2-iss")
    return request, params["code"]


def token_call(client: Client, data: dict[str, str], proof: str | None) -> requests.Response:
    headers = {"Accept": "application/json"}
    if proof is not None:
        headers["DPoP"] = proof
    return client.rp.session.post(client.rp.provider["token_endpoint"], data=data, auth=client.rp.client_auth(),
                                  headers=headers, timeout=TIMEOUT)


def code_grant(request: AuthRequest, code: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": request.pending.redirect_uri,
            "code_verifier": request.pending.code_verifier or ""}


def with_nonce(client: Client, key: DPoPKey, data: dict[str, str], **proof_changes: Any) -> requests.Response:
    """A token request with a proof from ``key``, sent again once with the nonce the OP demands."""
    endpoint = client.rp.provider["token_endpoint"]
    response = token_call(client, data, key.proof("POST", endpoint, **proof_changes))
    if key.remember_nonce(response):
        response = token_call(client, data, key.proof("POST", endpoint, **proof_changes))
    return response


def dpop_tokens(run: TestRun, client: Client, response: requests.Response) -> Tokens:
    """The token response checks with DPoP: 200, JSON, no-store, token_type DPoP (RFC 9449 §5)."""
    tokens = Tokens(response, json_body(response))
    if response.status_code != 200:
        run.fail(f"token endpoint answered HTTP {response.status_code}: {response.text[:200]}", ref="RFC6749-5.1")
    run.check("no-store" in response.headers.get("Cache-Control", ""), "token response lacks no-store",
              ref="RFC6749-5.1")
    run.require(tokens.body.get("access_token"), "no access_token", ref="RFC6749-5.1")
    run.check(tokens.body.get("token_type") == "DPoP", f"token_type {tokens.body.get('token_type')!r}, not DPoP",
              ref="RFC9449-5")
    return tokens


def refused(run: TestRun, response: requests.Response, errors: set[str], *, what: str, ref: str,
            status: int = 400) -> None:
    body = json_body(response)
    run.check(response.status_code == status and body.get("error") in errors,
              f"{what}: HTTP {response.status_code} {body.get('error')!r}, expected {status} {sorted(errors)}", ref=ref)


def resource(client: Client, access_token: str, key: DPoPKey, **proof_changes: Any) -> requests.Response:
    endpoint = client.rp.provider["userinfo_endpoint"]
    headers = {"Authorization": f"DPoP {access_token}",
               "DPoP": key.proof("GET", endpoint, access_token=access_token, **proof_changes)}
    return requests.get(endpoint, headers=headers, timeout=TIMEOUT)


# ---- the modules ----

@fapi_module("discovery-end-point-verification")
def discovery(run: TestRun) -> None:
    """FAPI2SPFinalDiscoveryEndpointVerification: PAR, PKCE S256, private_key_jwt, strong
    algorithms, DPoP algorithms, RFC 9207 ``iss``."""
    meta = run.env.provider
    run.check(bool(meta.get("pushed_authorization_request_endpoint")), "no pushed_authorization_request_endpoint",
              ref="FAPI2-5.3.1.2")
    run.check("S256" in meta.get("code_challenge_methods_supported", []), "S256 not supported", ref="FAPI2-5.3.1.2")
    run.check("private_key_jwt" in meta.get("token_endpoint_auth_methods_supported", []),
              "private_key_jwt not supported", ref="FAPI2-5.3.1.1")
    run.check(meta.get("authorization_response_iss_parameter_supported") is True,
              "authorization_response_iss_parameter_supported is not true", ref="FAPI2-5.3.1.2")
    dpop_algs = set(meta.get("dpop_signing_alg_values_supported", []))
    run.check(bool(dpop_algs) and dpop_algs <= STRONG, f"dpop_signing_alg_values_supported {sorted(dpop_algs)}",
              ref="FAPI2-5.4.1")
    run.check(bool(set(meta.get("id_token_signing_alg_values_supported", [])) & STRONG),
              "no PS256/ES256/EdDSA ID token algorithm", ref="FAPI2-5.4.1")
    run.check(bool(set(meta.get("token_endpoint_auth_signing_alg_values_supported", [])) & STRONG),
              "no PS256/ES256/EdDSA client assertion algorithm", ref="FAPI2-5.4.1")


@fapi_module("happy-flow")
def happy_flow(run: TestRun) -> None:
    """FAPI2SPFinalHappyFlow: PAR + private_key_jwt + DPoP; a DPoP token, a strong-alg ID token,
    UserInfo with the DPoP scheme and a proof."""
    client = financial_client(run)
    request, code = code_of(run, client)
    tokens = dpop_tokens(run, client, with_nonce(client, client.rp.dpop, code_grant(request, code)))
    client.validate_id_token(run, tokens, request)
    run.check(tokens.header.get("alg") in STRONG, f"ID token alg {tokens.header.get('alg')}", ref="FAPI2-5.4.1")
    answer = send_dpop(client.rp.session, client.rp.dpop, "GET", client.rp.provider["userinfo_endpoint"],
                       access_token=tokens.access_token, timeout=TIMEOUT)
    run.check(answer.status_code == 200, f"UserInfo with DPoP answered HTTP {answer.status_code}", ref="RFC9449-7")
    run.check(json_body(answer).get("sub") == tokens.claims.get("sub"), "UserInfo sub differs", ref="OIDCC-5.3.2")


@fapi_module("ensure-holder-of-key-required")
def holder_of_key_required(run: TestRun) -> None:
    """FAPI2SPFinalEnsureHolderOfKeyRequired: a token request without a DPoP proof is refused."""
    client = financial_client(run)
    request, code = code_of(run, client)
    refused(run, token_call(client, code_grant(request, code), None), {"invalid_dpop_proof", "invalid_request"},
            what="token request without a DPoP proof", ref="FAPI2-5.3.2.2")


@fapi_module("dpop-negative-tests")
def dpop_negative(run: TestRun) -> None:
    """FAPI2SPFinalDpopNegativeTests: malformed proofs at the token endpoint and the resource
    (typ, alg none, symmetric alg, private key in jwk, bad signature, wrong htm/htu/ath, reused
    jti), then the DPoP-bound token used as a bearer token."""
    client = financial_client(run)
    key = client.rp.dpop
    request, code = code_of(run, client)
    endpoint = client.rp.provider["token_endpoint"]
    key.nonce = token_call(client, {}, None).headers.get("DPoP-Nonce")
    bad = {
        "typ JWT": key.proof("POST", endpoint, header={"typ": "JWT"}),
        "alg none": key.proof("POST", endpoint, header={"alg": "none"}),
        "alg HS256": key.proof("POST", endpoint, header={"alg": "HS256"}),
        "jwk missing": key.proof("POST", endpoint, header={"jwk": DROP}),
        "private jwk": key.proof("POST", endpoint, header={"jwk": json.loads(key.key.export_private())}),
        "bad signature": key.proof("POST", endpoint, signing_key=DPoPKey().key),
        "htm GET": key.proof("GET", endpoint),
        "htu of PAR": key.proof("POST", client.rp.provider["pushed_authorization_request_endpoint"]),
        "iat an hour ago": key.proof("POST", endpoint, iat=int(time.time()) - 3600),
        "no jti": key.proof("POST", endpoint, jti=DROP),
    }
    for what, proof in bad.items():
        refused(run, token_call(client, code_grant(request, code), proof), {"invalid_dpop_proof"},
                what=f"token request with a proof with {what}", ref="RFC9449-4.3")
    good = key.proof("POST", endpoint)
    tokens = dpop_tokens(run, client, token_call(client, code_grant(request, code), good))
    replay = resource(client, tokens.access_token, key)  # first use of a resource proof succeeds
    run.check(replay.status_code == 200, f"UserInfo with a good proof answered HTTP {replay.status_code}",
              ref="RFC9449-7")
    proof = key.proof("GET", client.rp.provider["userinfo_endpoint"], access_token=tokens.access_token)
    headers = {"Authorization": f"DPoP {tokens.access_token}", "DPoP": proof}
    first = requests.get(client.rp.provider["userinfo_endpoint"], headers=headers, timeout=TIMEOUT)
    second = requests.get(client.rp.provider["userinfo_endpoint"], headers=headers, timeout=TIMEOUT)
    run.check(first.status_code == 200 and second.status_code == 401,
              f"a reused proof (jti) answered HTTP {first.status_code} then {second.status_code}", ref="RFC9449-11.1")
    for what, response in (
            ("wrong ath", resource(client, tokens.access_token, key, ath="A" * 43)),
            ("wrong htm", requests.get(client.rp.provider["userinfo_endpoint"], timeout=TIMEOUT, headers={
                "Authorization": f"DPoP {tokens.access_token}",
                "DPoP": key.proof("POST", client.rp.provider["userinfo_endpoint"],
                                  access_token=tokens.access_token)})),
            ("another key", resource(client, tokens.access_token, _with_nonce_of(key)))):
        run.check(response.status_code == 401 and response.headers.get("WWW-Authenticate", "").startswith("DPoP"),
                  f"UserInfo with {what} answered HTTP {response.status_code}", ref="RFC9449-7.1")
    bearer = requests.get(client.rp.provider["userinfo_endpoint"], timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {tokens.access_token}"})
    run.check(bearer.status_code == 401 and 'error="invalid_token"' in bearer.headers.get("WWW-Authenticate", "")
              and bearer.headers.get("WWW-Authenticate", "").startswith("DPoP"),
              f"a DPoP-bound token used as a bearer token answered HTTP {bearer.status_code}", ref="RFC9449-7.2")


def _with_nonce_of(key: DPoPKey) -> DPoPKey:
    other = DPoPKey()
    other.nonce = key.nonce
    return other


@fapi_module("ensure-dpopproof-with-iat-10seconds-before-succeeds")
def iat_before(run: TestRun) -> None:
    _iat_offset(run, -10)


@fapi_module("ensure-dpopproof-with-iat-10seconds-after-succeeds")
def iat_after(run: TestRun) -> None:
    _iat_offset(run, 10)


def _iat_offset(run: TestRun, seconds: int) -> None:
    """A client clock 10 s off either way is tolerated (RFC 9449 §11.1: a window of acceptance)."""
    client = financial_client(run)
    request, code = code_of(run, client)
    response = with_nonce(client, client.rp.dpop, code_grant(request, code), iat=int(time.time()) + seconds)
    dpop_tokens(run, client, response)


@fapi_module("ensure-dpop-auth-code-binding-success")
def dpop_jkt_binding(run: TestRun) -> None:
    """``dpop_jkt`` in the pushed request binds the code; the token request with that key works."""
    client = financial_client(run)
    holder = client.rp.dpop
    client.rp.dpop = None  # push without a proof, binding by dpop_jkt only
    request = pushed(run, client, dpop_jkt=holder.jkt)
    client.rp.dpop = holder
    params = authorize(run, client, Browser(run.env), request)
    dpop_tokens(run, client, with_nonce(client, holder, code_grant(request, params["code"])))


@fapi_module("ensure-dpopproof-at-par-endpoint-binding-success")
def par_proof_binding(run: TestRun) -> None:
    """A DPoP proof at PAR binds the code (RFC 9449 §10.1); the same key redeems it."""
    client = financial_client(run)
    request, code = code_of(run, client)
    dpop_tokens(run, client, with_nonce(client, client.rp.dpop, code_grant(request, code)))


@fapi_module("ensure-mismatched-dpop-jkt-fails")
def mismatched_par(run: TestRun) -> None:
    """PAR with a DPoP proof of one key and ``dpop_jkt`` of another is refused."""
    client = financial_client(run)
    response = _push_raw(client, {"dpop_jkt": DPoPKey().jkt}, proof_key=client.rp.dpop)
    refused(run, response, {"invalid_dpop_proof", "invalid_request"}, what="PAR with mismatched dpop_jkt",
            ref="RFC9449-10.1")


@fapi_module("ensure-token-endpoint-fails-with-mismatched-dpop-jkt")
def token_mismatched_jkt(run: TestRun) -> None:
    """The code bound by ``dpop_jkt`` is refused with a proof by another key."""
    client = financial_client(run)
    holder = client.rp.dpop
    client.rp.dpop = None
    request = pushed(run, client, dpop_jkt=DPoPKey().jkt)
    client.rp.dpop = holder
    params = authorize(run, client, Browser(run.env), request)
    refused(run, with_nonce(client, holder, code_grant(request, params["code"])), {"invalid_dpop_proof",
                                                                                    "invalid_grant"},
            what="token request with a key other than dpop_jkt", ref="RFC9449-10")


@fapi_module("ensure-token-endpoint-fails-with-mismatched-dpop-proof-jkt")
def token_mismatched_proof(run: TestRun) -> None:
    """The code bound by the proof at PAR is refused with a proof by another key."""
    client = financial_client(run)
    request, code = code_of(run, client)
    refused(run, with_nonce(client, DPoPKey(), code_grant(request, code)), {"invalid_dpop_proof", "invalid_grant"},
            what="token request with a key other than the PAR proof's", ref="RFC9449-10.1")


def _push_raw(client: Client, extra: dict[str, str], *, proof_key: DPoPKey | None = None,
              authenticate: bool = True, **params: str) -> requests.Response:
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    data = {"client_id": client.client_id, "response_type": "code", "scope": "openid",
            "redirect_uri": client.redirect_uri, "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    for name, value in params.items():
        if value == "":
            data.pop(name, None)
        else:
            data[name] = value
    endpoint = client.rp.provider["pushed_authorization_request_endpoint"]
    auth = client.rp.client_auth() if authenticate else None
    if proof_key is None:
        return requests.post(endpoint, data=data, auth=auth, timeout=TIMEOUT)
    return send_dpop(requests.Session(), proof_key, "POST", endpoint, data=data, auth=auth, timeout=TIMEOUT)


@fapi_module("ensure-unsigned-authorization-request-without-using-par-fails")
def without_par(run: TestRun) -> None:
    """FAPI 2.0 §5.3.1.2 item 1: authorization requests only through PAR."""
    client = financial_client(run)
    request = client.auth_request(scope="openid", par=False)
    landing = Browser(run.env).go(request.url)
    if landing.url is None:
        checks.error_page(run, landing, "the request was not pushed", ref="FAPI2-5.3.1.2")
        return
    checks.error_response(run, landing.params, {"invalid_request", "invalid_request_object"})


@fapi_module("par-ensure-pkce-required")
def pkce_required(run: TestRun) -> None:
    client = financial_client(run)
    response = _push_raw(client, {}, proof_key=client.rp.dpop, code_challenge="", code_challenge_method="")
    refused(run, response, {"invalid_request"}, what="PAR without PKCE", ref="FAPI2-5.3.1.2")


@fapi_module("par-plain-pkce-rejected")
def plain_pkce(run: TestRun) -> None:
    client = financial_client(run)
    response = _push_raw(client, {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                         proof_key=client.rp.dpop)
    refused(run, response, {"invalid_request"}, what="PAR with plain PKCE", ref="FAPI2-5.3.1.2")


@fapi_module("par-attempt-reuse-request_uri")
def reuse_request_uri(run: TestRun) -> None:
    """RFC 9126 §2.2 / FAPI 2.0: a request_uri is single use."""
    client = financial_client(run)
    browser = Browser(run.env)
    request, _ = code_of(run, client, browser)
    again = browser.go(request.url)
    if again.url is None:
        checks.error_page(run, again, "the request_uri was already used", ref="RFC9126-2.2")
    else:
        checks.error_response(run, again.params)


@fapi_module("attempt-reuse-authorization-code-after-one-second")
def reuse_code(run: TestRun) -> None:
    client = financial_client(run)
    request, code = code_of(run, client)
    dpop_tokens(run, client, with_nonce(client, client.rp.dpop, code_grant(request, code)))
    time.sleep(1)
    checks.token_error(run, with_nonce(client, client.rp.dpop, code_grant(request, code)))


@fapi_module("ensure-token-endpoint-fails-with-expired-auth-code")
def expired_code(run: TestRun) -> None:
    """Codes live at most 60 s (FAPI 2.0 §5.3.1.2 item 9 via PROTOCOL: financial ≤ 60 s)."""
    client = financial_client(run)
    request, code = code_of(run, client)
    if run.env.age_codes is not None:
        run.env.age_codes(61)  # the operator's clock moves on: every code is 61 s older
    else:
        time.sleep(61)
    checks.token_error(run, with_nonce(client, client.rp.dpop, code_grant(request, code)))


@fapi_module("ensure-signed-client-assertion-with-RS256-fails")
def rs256_assertion(run: TestRun) -> None:
    """FAPI 2.0 §5.4.1: a client assertion signed RS256 is refused (the client's key is RSA,
    registered without an alg, so only the signature algorithm differs)."""
    key = JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(6))
    client = financial_client(run, key=key)
    now = int(time.time())
    for alg, ok in (("RS256", False), ("PS256", True)):
        client.rp.signing_key = _with_alg(key, alg)
        assertion = client.rp.client_assertion(run.env.issuer, iat=now, exp=now + 60)
        response = requests.post(client.rp.provider["pushed_authorization_request_endpoint"], timeout=TIMEOUT, data={
            "client_id": client.client_id, "response_type": "code", "scope": "openid",
            "redirect_uri": client.redirect_uri, "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        if ok:
            run.check(response.status_code == 201, f"PAR with a PS256 assertion answered HTTP {response.status_code}",
                      ref="FAPI2-5.4.1")
        else:
            run.check(response.status_code in (400, 401) and json_body(response).get("error") == "invalid_client",
                      f"PAR with an RS256 assertion answered HTTP {response.status_code}", ref="FAPI2-5.4.1")


def _with_alg(key: JWK, alg: str) -> JWK:
    data = json.loads(key.export_private())
    data["alg"] = alg
    return JWK(**data)


@fapi_module("ensure-signed-request-object-with-RS256-fails", plan=FAPI2_MS)
def rs256_request_object(run: TestRun) -> None:
    """FAPI 2.0 §5.4.1: a request object signed RS256 is refused at PAR."""
    key = JWK.generate(kty="RSA", size=2048, kid=secrets.token_urlsafe(6))
    client = financial_client(run, key=key)
    client.rp.signing_key = _with_alg(key, "PS256")
    now = int(time.time())
    claims = {"iss": client.client_id, "aud": run.env.issuer, "client_id": client.client_id, "response_type": "code",
              "scope": "openid", "redirect_uri": client.redirect_uri, "state": "s", "nonce": "n", "exp": now + 60,
              "nbf": now, "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
              "code_challenge_method": "S256"}
    response = requests.post(client.rp.provider["pushed_authorization_request_endpoint"], timeout=TIMEOUT, data={
        "client_id": client.client_id, "request": client.request_object(claims, alg="RS256", key=key),
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": client.rp.client_assertion(run.env.issuer)})
    refused(run, response, {"invalid_request_object", "invalid_request"}, what="PAR with an RS256 request object",
            ref="FAPI2-5.4.1")


@fapi_module("refresh-token")
def refresh(run: TestRun) -> None:
    """A refresh with a DPoP proof gives a new DPoP-bound access token; without one it is refused."""
    client = financial_client(run, grant_types=["authorization_code", "refresh_token"])
    request = pushed(run, client, scope="openid profile offline_access", prompt="consent")
    params = authorize(run, client, Browser(run.env), request)
    tokens = dpop_tokens(run, client, with_nonce(client, client.rp.dpop, code_grant(request, params["code"])))
    run.require(tokens.refresh_token, "no refresh token for offline_access", ref="OIDCC-11")
    grant = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""}
    refused(run, token_call(client, grant, None), {"invalid_dpop_proof", "invalid_request"},
            what="refresh without a DPoP proof", ref="RFC9449-5")
    dpop_tokens(run, client, with_nonce(client, client.rp.dpop, grant))


@module("jp-fapi2-par-without-client-authentication-fails", plan=FAPI2, variant=VARIANT, official=False)
def par_unauthenticated(run: TestRun) -> None:
    """RFC 9126 §2.1: the PAR endpoint authenticates the client like the token endpoint."""
    client = financial_client(run)
    response = _push_raw(client, {}, authenticate=False)
    refused(run, response, {"invalid_client"}, what="PAR without client authentication", ref="RFC9126-2.1",
            status=401)


@module("jp-fapi2-registration-refuses-rs256", plan=FAPI2, variant=VARIANT, official=False)
def registration_rs256(run: TestRun) -> None:
    """FAPI 2.0 §5.4.1 at registration: RS256 for any signature of a financial client is refused."""
    key = generate_client_key("EC")
    for field in ("id_token_signed_response_alg", "request_object_signing_alg", "token_endpoint_auth_signing_alg"):
        body = {"redirect_uris": [run.env.callback_url(run.spec.name)], "rp_category": "financial",
                "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [key.export_public(as_dict=True)]},
                field: "RS256"}
        response = requests.post(run.env.provider["registration_endpoint"], json=body, timeout=TIMEOUT,
                                 headers=_registration_headers(run))
        checks.registration_error(run, response, {"invalid_client_metadata"})


def _registration_headers(run: TestRun) -> dict[str, str]:
    token = run.env.registration_token
    return {"Authorization": f"Bearer {token}"} if token else {}

