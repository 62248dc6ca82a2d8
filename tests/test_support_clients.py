"""Tests of the test clients themselves (wallet, RP, RP host), without the real IdP.

The clients are written against PROTOCOL.md only; these tests pin the pieces that can be
checked offline (the JPKI binding string, at_hash, ID token validation, HTML parsing,
the RP host) and run the whole wallet → browser → RP flow against a deliberately small
*fake* IdP defined here, which checks the clients' wire behaviour (encodings, PKCE,
client authentication, same-device cookies). The fake is not the IdP and proves
nothing about it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import cbor2
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from flask import Flask, jsonify, make_response, redirect, request
from jwcrypto.jwk import JWK, JWKSet
from jwcrypto.jws import JWS
from jwcrypto.jwt import JWT
from werkzeug.serving import make_server

from idp.proofing import jpki
from idp.proofing.demo_card import TestCard, TestJpkiCA, cached_key
from tests.support import rp as rp_module
from tests.support.authenticator import b64url, b64url_decode
from tests.support.rp import (
    AuthorizationError,
    BrowserFlowError,
    IdTokenError,
    RelyingParty,
    RPError,
    browser_login,
    parse_consent_form,
    parse_page,
    token_hash,
    validate_id_token,
)
from tests.support.rp_host import RpHost
from tests.support.wallet import Wallet, WalletError, binding_message

ISSUER = "https://idp.example.jp"
CLIENT_ID = "client-1"


def left_half_b64(value: str, algorithm: str) -> str:
    """at_hash computed here independently of rp.token_hash (hashlib by name)."""
    digest = hashlib.new(algorithm, value.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


# binding string -------------------------------------------------------------------------
def test_binding_message_matches_the_server_helper() -> None:
    for _ in range(5):
        challenge, spki = os.urandom(32), os.urandom(91)
        assert binding_message(challenge, spki) == jpki.binding_message(challenge, spki)


def test_binding_message_format() -> None:
    challenge = bytes(range(32))
    spki = b"not really an SPKI"
    expected = (
        "jpki-enroll-v1:"
        + base64.urlsafe_b64encode(challenge).decode().rstrip("=")
        + ":"
        + base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).decode().rstrip("=")
    )
    message = binding_message(challenge, spki)
    assert message == expected.encode("ascii")
    assert b"=" not in message


@pytest.fixture(scope="module")
def jpki_ca() -> TestJpkiCA:
    return TestJpkiCA.create(key=cached_key("support-clients-ca"))


@pytest.fixture(scope="module")
def card(jpki_ca: TestJpkiCA) -> TestCard:
    return jpki_ca.issue_card(key=cached_key("support-clients-card"))


def test_card_signature_over_wallet_binding_equals_sign_binding(card: TestCard) -> None:
    """PKCS#1 v1.5 is deterministic, so both routes must give the same bytes."""
    challenge, spki = os.urandom(32), os.urandom(91)
    assert card.sign(binding_message(challenge, spki)) == card.sign_binding(challenge, spki)


# at_hash and ID token validation ------------------------------------------------------------
def test_token_hash_matches_openid_connect_core_examples() -> None:
    # OpenID Connect Core 1.0 Appendix A.3 (at_hash) and A.4 (c_hash), both RS256.
    assert token_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256") == "77QmUPtjPfzWtF2AnpK9RQ"
    assert token_hash("Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk", "RS256") == "LDktKdoQak3Pk0cnXxCltA"


@pytest.mark.parametrize(
    ("alg", "hash_name", "length"),
    [("ES256", "sha256", 22), ("RS256", "sha256", 22), ("PS256", "sha256", 22), ("ES384", "sha384", 32),
     ("RS512", "sha512", 43), ("EdDSA", "sha512", 43)],
)
def test_token_hash_uses_the_hash_of_the_alg(alg: str, hash_name: str, length: int) -> None:
    token = secrets.token_urlsafe(32)
    assert token_hash(token, alg) == left_half_b64(token, hash_name)
    assert len(token_hash(token, alg)) == length


def test_token_hash_refuses_unknown_alg() -> None:
    with pytest.raises(ValueError):
        token_hash("x", "HS256x")


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, JWK]:
    return {
        "ES256": JWK.generate(kty="EC", crv="P-256", kid="ec-1", use="sig", alg="ES256"),
        "RS256": JWK.generate(kty="RSA", size=2048, kid="rsa-1", use="sig", alg="RS256"),
    }


def idp_jwks(keys: dict[str, JWK]) -> JWKSet:
    jwks = JWKSet()
    for key in keys.values():
        jwks.add(JWK(**key.export_public(as_dict=True)))
    return jwks


def make_id_token(key: JWK, alg: str, access_token: str, header: dict | None = None, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": "pairwise-sub", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
        "auth_time": now - 5, "nonce": "n-1", "acr": "urn:example:acr:device", "amr": ["hwk", "user"],
        "at_hash": left_half_b64(access_token, "sha256"),
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    token = JWT(header={"alg": alg, "kid": key["kid"], **(header or {})}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def check(token: str, jwks: JWKSet, access_token: str, **kwargs: Any) -> tuple[dict, dict]:
    args: dict[str, Any] = dict(jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1", access_token=access_token)
    args.update(kwargs)
    return validate_id_token(token, **args)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_valid_id_token_passes(signing_keys: dict[str, JWK], alg: str) -> None:
    access_token = secrets.token_urlsafe(32)
    token = make_id_token(signing_keys[alg], alg, access_token)
    header, claims = check(token, idp_jwks(signing_keys), access_token, require_at_hash=True)
    assert header["alg"] == alg and claims["sub"] == "pairwise-sub"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://evil.example"}, "bad_iss"),
        ({"aud": "other-client"}, "bad_aud"),
        ({"aud": [CLIENT_ID, "other"]}, "bad_azp"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"iat": int(time.time()) + 3600}, "bad_iat"),
        ({"nonce": "n-2"}, "bad_nonce"),
        ({"nonce": None}, "bad_nonce"),
        ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "bad_at_hash"),
        ({"amr": None}, "bad_amr"),
        ({"acr": None}, "bad_acr"),
        ({"auth_time": None}, "bad_auth_time"),
        ({"sub": ""}, "bad_sub"),
    ],
)
def test_invalid_id_token_claims_fail(signing_keys: dict[str, JWK], alg: str, overrides: dict, reason: str) -> None:
    access_token = secrets.token_urlsafe(32)
    token = make_id_token(signing_keys[alg], alg, access_token, **overrides)
    with pytest.raises(IdTokenError) as caught:
        check(token, idp_jwks(signing_keys), access_token)
    assert caught.value.reason == reason


def test_several_audiences_with_azp_pass(signing_keys: dict[str, JWK]) -> None:
    access_token = secrets.token_urlsafe(32)
    token = make_id_token(signing_keys["ES256"], "ES256", access_token, aud=[CLIENT_ID, "x"], azp=CLIENT_ID)
    check(token, idp_jwks(signing_keys), access_token)


def test_missing_at_hash_fails_only_when_required(signing_keys: dict[str, JWK]) -> None:
    access_token = secrets.token_urlsafe(32)
    token = make_id_token(signing_keys["ES256"], "ES256", access_token, at_hash=None)
    check(token, idp_jwks(signing_keys), access_token)
    with pytest.raises(IdTokenError, match="bad_at_hash"):
        check(token, idp_jwks(signing_keys), access_token, require_at_hash=True)


def test_id_token_signed_by_another_key_fails(signing_keys: dict[str, JWK]) -> None:
    access_token = secrets.token_urlsafe(32)
    rogue = JWK.generate(kty="EC", crv="P-256", kid="ec-1", alg="ES256")
    with pytest.raises(IdTokenError, match="bad_signature"):
        check(make_id_token(rogue, "ES256", access_token), idp_jwks(signing_keys), access_token)
    stranger = JWK.generate(kty="EC", crv="P-256", kid="unknown", alg="ES256")
    with pytest.raises(IdTokenError, match="unknown_key"):
        check(make_id_token(stranger, "ES256", access_token), idp_jwks(signing_keys), access_token)


def test_symmetric_and_unlisted_algs_are_refused(signing_keys: dict[str, JWK]) -> None:
    access_token = secrets.token_urlsafe(32)
    secret = JWK.generate(kty="oct", size=256, kid="ec-1")
    with pytest.raises(IdTokenError, match="bad_alg"):
        check(make_id_token(secret, "HS256", access_token), idp_jwks(signing_keys), access_token)
    token = make_id_token(signing_keys["RS256"], "RS256", access_token)
    with pytest.raises(IdTokenError, match="bad_alg"):
        check(token, idp_jwks(signing_keys), access_token, algs={"ES256"})


def test_max_age_is_enforced(signing_keys: dict[str, JWK]) -> None:
    access_token = secrets.token_urlsafe(32)
    token = make_id_token(signing_keys["ES256"], "ES256", access_token, auth_time=int(time.time()) - 7200)
    check(token, idp_jwks(signing_keys), access_token)
    with pytest.raises(IdTokenError, match="bad_auth_time"):
        check(token, idp_jwks(signing_keys), access_token, max_age=600)


# RP host ---------------------------------------------------------------------------------------
def test_rp_host_serves_documents_and_records_posts() -> None:
    with RpHost() as host:
        url = host.put("/sector.json", ["https://rp.example/cb"])
        assert url == host.url("/sector.json") and url.startswith("http://127.0.0.1:")
        response = requests.get(url, timeout=5)
        assert response.status_code == 200 and response.json() == ["https://rp.example/cb"]
        assert response.headers["Content-Type"] == "application/json"

        assert requests.get(host.url("/missing"), timeout=5).status_code == 404
        assert [r.path for r in host.received(method="GET")] == ["/sector.json", "/missing"]

        host.put("/raw", b"not json", content_type="text/plain", status=500)
        raw = requests.get(host.url("/raw"), timeout=5)
        assert (raw.status_code, raw.text) == (500, "not json")

        threading.Timer(0.2, lambda: requests.post(host.url("/bcl"), data={"logout_token": "t1"}, timeout=5)).start()
        received = host.wait_for("/bcl", timeout=5)
        assert len(received) == 1 and received[0].value("logout_token") == "t1"
        requests.post(host.url("/bcl"), json={"a": 1}, timeout=5)
        assert [r.json() if not r.form else r.value("logout_token") for r in host.received("/bcl")] == ["t1", {"a": 1}]
        host.clear()
        assert host.received("/bcl") == []
    with pytest.raises(RuntimeError):
        host.url("/x")


# HTML parsing --------------------------------------------------------------------------------------
CONSENT_HTML = """<!doctype html><html><body>
<h1>Example City</h1><p>municipal</p><ul><li>name</li><li>address</li></ul>
<form method="post" action="/consent">
  <input type="hidden" name="txn" value="tx-123">
  <input type="hidden" name="csrf_token" value="cs&amp;rf">
  <label><input type="checkbox" name="remember" value="yes"> remember</label>
  <input type="checkbox" name="unchecked" value="x">
  <button type="submit" name="decision" value="allow">Allow</button>
  <button type="submit" name="decision" value="deny">Deny</button>
</form>
<form method="get" action="/search"><input type="hidden" name="txn" value="other"></form>
</body></html>"""


def test_consent_form_parser_extracts_hidden_fields() -> None:
    form = parse_consent_form(CONSENT_HTML)
    assert (form.txn, form.csrf_token, form.action) == ("tx-123", "cs&rf", "/consent")
    assert form.decisions == ["allow", "deny"]
    assert form.has_remember
    assert form.submission("allow") == [
        ("txn", "tx-123"), ("csrf_token", "cs&rf"), ("remember", "1"), ("decision", "allow"),
    ]
    assert form.submission("deny", remember=False) == [("txn", "tx-123"), ("csrf_token", "cs&rf"), ("decision", "deny")]


def test_consent_form_parser_refuses_incomplete_forms() -> None:
    with pytest.raises(BrowserFlowError):
        parse_consent_form(CONSENT_HTML.replace('name="csrf_token"', 'name="csrf"'))
    with pytest.raises(BrowserFlowError):
        parse_consent_form('<form method="get" action="/consent"><input type=hidden name=txn value=1></form>')


def test_page_hooks_are_found_with_their_text() -> None:
    page = parse_page(
        '<main><button data-action="passkey" type="button">Use <b>this</b> device</button>'
        '<img data-action="qr" src="/qr.png"><p>Code: <span data-role="confirmation-code">42 17</span></p></main>'
    )
    assert page.hook("action", "passkey").text == "Use this device"
    assert page.hook("action", "qr").attrs["src"] == "/qr.png"
    assert page.hook("role", "confirmation-code").text == "42 17"
    assert page.hook("action", "nothing") is None


# a fake IdP for the flow tests ----------------------------------------------------------------------
class FakeIdP:
    """Just enough of PROTOCOL.md to exercise the clients; strict on what they send."""

    def __init__(self) -> None:
        self.key = JWK.generate(kty="EC", crv="P-256", kid="fake-1", use="sig", alg="ES256")
        self.clients: dict[str, dict] = {}
        self.enrollments: dict[str, dict] = {}
        self.credentials: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self.txns: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}
        self.remembered: set[str] = set()
        self.issuer = ""
        self.app = self._build()

    # helpers
    @staticmethod
    def fail(status: int, error: str) -> Any:
        return make_response(jsonify(error=error, error_description=error), status)

    def check_client_data(self, credential: dict, challenge: bytes, type_: str) -> bytes:
        client_data = b64url_decode(credential["response"]["clientDataJSON"])
        parsed = json.loads(client_data)
        assert parsed["challenge"] == b64url(challenge) and parsed["type"] == type_
        assert parsed["origin"] == self.issuer
        return client_data

    def verify_assertion(self, credential: dict, challenge: bytes) -> bytes:
        credential_id = b64url_decode(credential["rawId"])
        client_data = self.check_client_data(credential, challenge, "webauthn.get")
        auth_data = b64url_decode(credential["response"]["authenticatorData"])
        assert auth_data[:32] == hashlib.sha256(b"127.0.0.1").digest()
        self.credentials[credential_id].verify(
            b64url_decode(credential["response"]["signature"]),
            auth_data + hashlib.sha256(client_data).digest(),
            ec.ECDSA(hashes.SHA256()),
        )
        return credential_id

    def request_options(self, challenge: bytes, allow: list[bytes]) -> dict:
        return {
            "challenge": b64url(challenge), "rpId": "127.0.0.1", "userVerification": "required",
            "allowCredentials": [{"type": "public-key", "id": b64url(c)} for c in allow], "timeout": 60000,
        }

    def authenticate_client(self) -> dict:
        form = request.form
        if "client_assertion" in form:
            assert form["client_assertion_type"] == rp_module.ASSERTION_TYPE
            jws = JWS()
            jws.deserialize(form["client_assertion"])
            client = self.clients[json.loads(jws.objects["payload"])["iss"]]
            jws.verify(JWKSet.from_json(json.dumps(client["jwks"])).get_key(jws.jose_header["kid"]))
            claims = json.loads(jws.payload)
            assert claims["sub"] == claims["iss"] and claims["aud"] in (self.issuer, self.issuer + "/token")
            method = "private_key_jwt"
        elif request.authorization is not None:
            raw = base64.b64decode(request.headers["Authorization"].split()[1]).decode()
            user, password = (unquote(part) for part in raw.split(":", 1))
            client = self.clients[user]
            assert client["client_secret"] == password
            method = "client_secret_basic"
        else:
            client = self.clients[form["client_id"]]
            assert client["client_secret"] == form["client_secret"]
            method = "client_secret_post"
        assert method == client["token_endpoint_auth_method"]
        return client

    def _build(self) -> Flask:  # noqa: C901 - one route table
        app = Flask("fake_idp")
        idp = self

        @app.errorhandler(Exception)
        def bad(exc: Exception) -> Any:
            return idp.fail(400, f"invalid_request {exc!r}")

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            base = idp.issuer
            return jsonify(
                issuer=base, authorization_endpoint=base + "/authorize", token_endpoint=base + "/token",
                userinfo_endpoint=base + "/userinfo", jwks_uri=base + "/jwks", registration_endpoint=base + "/register",
                id_token_signing_alg_values_supported=["ES256"], authorization_response_iss_parameter_supported=True,
            )

        @app.get("/jwks")
        def jwks() -> Any:
            return jsonify(keys=[idp.key.export_public(as_dict=True)])

        @app.post("/register")
        def register() -> Any:
            body = request.get_json()
            if body.get("rp_category") not in ("municipal", "medical", "financial", "transport"):
                return idp.fail(400, "invalid_client_metadata")
            client = dict(body, client_id=secrets.token_urlsafe(8) + ":/ x")  # needs RFC 6749 §2.3.1 encoding
            if body["token_endpoint_auth_method"] != "private_key_jwt":
                client["client_secret"] = secrets.token_urlsafe(16) + "%+:"
            idp.clients[client["client_id"]] = client
            return make_response(jsonify(client), 201)

        @app.post("/enroll/begin")
        def enroll_begin() -> Any:
            assert request.get_json() == {}
            eid, challenge = secrets.token_urlsafe(8), os.urandom(32)
            idp.enrollments[eid] = {"challenge": challenge}
            options = {
                "rp": {"id": "127.0.0.1", "name": "Fake"}, "challenge": b64url(challenge),
                "user": {"id": b64url(os.urandom(16)), "name": "a", "displayName": "a"},
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
                "authenticatorSelection": {"userVerification": "required"}, "attestation": "none",
            }
            return jsonify(enrollment_id=eid, publicKey=options, expires_in=300)

        @app.post("/enroll/finish")
        def enroll_finish() -> Any:
            body = request.get_json()
            enrollment = idp.enrollments[body["enrollment_id"]]
            credential = body["credential"]
            idp.check_client_data(credential, enrollment["challenge"], "webauthn.create")
            auth_data = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))["authData"]
            id_length = int.from_bytes(auth_data[53:55], "big")
            cose = cbor2.loads(auth_data[55 + id_length:])
            public_key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big"), ec.SECP256R1()
            ).public_key()
            spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            certificate = x509.load_der_x509_certificate(base64.b64decode(body["jpki"]["certificate"], validate=True))
            chain = [base64.b64decode(c, validate=True) for c in body["jpki"]["chain"]]
            certificate.public_key().verify(
                base64.b64decode(body["jpki"]["signature"], validate=True),
                jpki.binding_message(enrollment["challenge"], spki),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            credential_id = auth_data[55:55 + id_length]
            assert b64url_decode(credential["rawId"]) == credential_id
            idp.credentials[credential_id] = public_key
            enrollment.update(credential_id=credential_id, activation=os.urandom(32), chain=chain)
            return make_response(jsonify(
                status="pending",
                certificate=base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode(),
                ca_chain=[base64.b64encode(b"ca").decode()], expires_in=600,
                activation={"publicKey": idp.request_options(enrollment["activation"], [credential_id])},
            ), 201)

        @app.post("/enroll/activate")
        def enroll_activate() -> Any:
            body = request.get_json()
            enrollment = idp.enrollments[body["enrollment_id"]]
            try:
                credential_id = idp.verify_assertion(body["credential"], enrollment["activation"])
            except Exception:  # noqa: BLE001 - any failure is the same refusal
                return idp.fail(400, "activation_failed")
            assert credential_id == enrollment["credential_id"]
            return jsonify(status="active", serial="0a1b2c")

        @app.get("/authorize")
        def authorize() -> Any:
            args = request.args
            client = idp.clients.get(args.get("client_id", ""))
            if client is None or args.get("redirect_uri") not in client["redirect_uris"]:
                return "bad client", 400
            assert args["response_type"] == "code" and args["code_challenge_method"] == "S256"
            txn, browser = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
            idp.txns[txn] = {"args": dict(args), "browser": browser, "challenge": os.urandom(32), "status": "pending"}
            response = redirect(f"/login?txn={txn}", 302)
            response.set_cookie("browser", browser)
            return response

        @app.get("/login")
        def login_page() -> Any:
            idp.txns[request.args["txn"]]
            return '<html><button data-action="passkey">Passkey</button><img data-action="qr" src="/q"></html>'

        @app.post("/login/options")
        def login_options() -> Any:
            txn = idp.txns[request.get_json()["txn"]]
            rp = {"name": "Test RP", "category": "municipal", "claims": ["name"], "purpose": "testing"}
            return jsonify(publicKey=idp.request_options(txn["challenge"], []), rp=rp)

        @app.post("/login/assertion")
        def login_assertion() -> Any:
            body = request.get_json()
            txn_id = body["txn"]
            txn = idp.txns[txn_id]
            try:
                idp.verify_assertion(body["credential"], txn["challenge"])
            except Exception:  # noqa: BLE001
                return idp.fail(400, "invalid_assertion")
            credential_id = b64url_decode(body["credential"]["rawId"])
            txn.update(status="authenticated", sub="sub-" + b64url(hashlib.sha256(credential_id).digest()[:8]))
            same_device = request.cookies.get("browser") == txn["browser"]
            return jsonify(status="authenticated", next=f"/consent?txn={txn_id}" if same_device else "/phone/done")

        @app.get("/login/status")
        def login_status() -> Any:
            txn_id = request.args["txn"]
            txn = idp.txns[txn_id]
            assert request.cookies.get("browser") == txn["browser"]
            return jsonify(status=txn["status"], next=f"/consent?txn={txn_id}")

        @app.get("/consent")
        def consent_page() -> Any:
            txn_id = request.args["txn"]
            txn = idp.txns[txn_id]
            assert request.cookies.get("browser") == txn["browser"] and txn["status"] == "authenticated"
            if txn["args"]["client_id"] in idp.remembered:
                return idp.answer(txn_id, "allow")
            txn["csrf"] = secrets.token_urlsafe(8)
            return (
                f'<form method="post" action="/consent"><input type="hidden" name="txn" value="{txn_id}">'
                f'<input type="hidden" name="csrf_token" value="{txn["csrf"]}"><input type="checkbox" name="remember">'
                '<button name="decision" value="allow">OK</button>'
                '<button name="decision" value="deny">No</button></form>'
            )

        @app.post("/consent")
        def consent() -> Any:
            txn = idp.txns[request.form["txn"]]
            assert request.form["csrf_token"] == txn["csrf"]
            if request.form.get("remember") == "1":
                idp.remembered.add(txn["args"]["client_id"])
            return idp.answer(request.form["txn"], request.form["decision"])

        @app.post("/token")
        def token() -> Any:
            client = idp.authenticate_client()
            grant = idp.codes.pop(request.form["code"])
            args = grant["args"]
            assert request.form["grant_type"] == "authorization_code" and args["client_id"] == client["client_id"]
            assert request.form["redirect_uri"] == args["redirect_uri"]
            verifier = request.form["code_verifier"]
            assert b64url(hashlib.sha256(verifier.encode()).digest()) == args["code_challenge"]
            access_token = secrets.token_urlsafe(24)
            idp.tokens[access_token] = grant["sub"]
            now = int(time.time())
            claims = {
                "iss": idp.issuer, "sub": grant["sub"], "aud": client["client_id"], "iat": now, "exp": now + 300,
                "auth_time": now, "nonce": args["nonce"], "acr": "device", "amr": ["hwk", "user"],
                "at_hash": left_half_b64(access_token, "sha256"),
            }
            id_token = JWT(header={"alg": "ES256", "kid": "fake-1"}, claims=claims)
            id_token.make_signed_token(idp.key)
            return jsonify(
                access_token=access_token, token_type="Bearer", expires_in=300, id_token=id_token.serialize()
            )

        @app.route("/userinfo", methods=["GET", "POST"])
        def userinfo() -> Any:
            header = request.headers.get("Authorization", "")
            token = header[7:] if header.startswith("Bearer ") else request.form.get("access_token", "")
            if token not in idp.tokens:
                return idp.fail(401, "invalid_token")
            return jsonify(sub=idp.tokens[token], name="前橋　太郎")

        return app

    def answer(self, txn_id: str, decision: str) -> Any:
        args = self.txns[txn_id]["args"]
        if decision == "allow":
            code = secrets.token_urlsafe(12)
            self.codes[code] = {"args": args, "sub": self.txns[txn_id]["sub"]}
            query = {"code": code, "state": args["state"], "iss": self.issuer}
        else:
            query = {"error": "access_denied", "state": args["state"], "iss": self.issuer}
        return redirect(f"{args['redirect_uri']}?{urlencode(query)}", 302)


@pytest.fixture(scope="module")
def fake_idp() -> Iterator[FakeIdP]:
    idp = FakeIdP()
    server = make_server("127.0.0.1", 0, idp.app, threaded=True)
    idp.issuer = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield idp
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def enrolled(fake_idp: FakeIdP, card: TestCard, jpki_ca: TestJpkiCA) -> Any:
    return Wallet(fake_idp.issuer).enroll(card, jpki_chain=[jpki_ca.certificate])


REDIRECT_URI = "http://127.0.0.1:9/cb"


# flow tests against the fake ---------------------------------------------------------------------------
def test_enroll_produces_an_active_device(enrolled: Any, fake_idp: FakeIdP) -> None:
    assert enrolled.serial == "0a1b2c"
    assert enrolled.ca_chain == [b"ca"]
    assert fake_idp.credentials[enrolled.credential_id] is not None
    assert enrolled.certificate.serial_number > 0


def test_enroll_steps_can_be_tampered(fake_idp: FakeIdP, card: TestCard) -> None:
    wallet = Wallet(fake_idp.issuer)
    with pytest.raises(WalletError) as caught:
        wallet.enroll(card, tamper={"binding_challenge": os.urandom(32)})
    assert caught.value.status == 400
    with pytest.raises(ValueError):
        wallet.enroll(card, tamper={"binding_chalenge": b""})
    authenticator = wallet.new_authenticator()
    start = wallet.begin()
    finished = wallet.finish(start, card, authenticator)
    assert finished.status == "pending"
    with pytest.raises(WalletError) as caught:
        wallet.activate(finished.enrollment_id, finished.activation_options, authenticator,
                        sign_with=ec.generate_private_key(ec.SECP256R1()))
    assert caught.value.error == "activation_failed"
    answer = wallet.activate(finished.enrollment_id, finished.activation_options, authenticator)
    assert answer == {"status": "active", "serial": "0a1b2c"}


@pytest.mark.parametrize(
    ("method", "key_type"),
    [
        ("client_secret_basic", "EC"),
        ("client_secret_post", "EC"),
        ("private_key_jwt", "EC"),
        ("private_key_jwt", "RSA"),
    ],
)
def test_same_device_flow_end_to_end(fake_idp: FakeIdP, enrolled: Any, method: str, key_type: str) -> None:
    rp = RelyingParty.register(
        fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="municipal",
        token_endpoint_auth_method=method, key_type=key_type,
    )
    if method == "private_key_jwt":
        assert rp.client_secret is None and rp.client["jwks"]["keys"][0]["kty"] == key_type
    browser = requests.Session()
    location = rp.start(browser, scope="openid profile")
    assert urlsplit(location).path == "/login"
    callback = browser_login(browser, fake_idp.issuer, location, Wallet(fake_idp.issuer), enrolled)
    assert callback.startswith(REDIRECT_URI + "?")
    result = rp.finish(callback)
    assert result.claims["amr"] == ["hwk", "user"] and result.header["alg"] == "ES256"
    for how in ("GET", "POST-header", "POST-body"):
        assert rp.userinfo(result.access_token, how)["sub"] == result.sub
    with pytest.raises(RPError) as caught:
        rp.userinfo("nope")
    assert (caught.value.status, caught.value.error) == (401, "invalid_token")


def test_code_replay_and_state_reuse_are_refused(fake_idp: FakeIdP, enrolled: Any) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="medical")
    browser = requests.Session()
    callback = browser_login(browser, fake_idp.issuer, rp.start(browser), Wallet(fake_idp.issuer), enrolled)
    assert rp.finish(callback).sub
    code = dict(parse_qsl(urlsplit(callback).query))["code"]
    replay = rp.token_request({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI})
    assert replay.status_code == 400
    with pytest.raises(AuthorizationError, match="state_mismatch"):
        rp.finish(callback)


def test_iss_mismatch_is_caught(fake_idp: FakeIdP, enrolled: Any) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="medical")
    browser = requests.Session()
    callback = browser_login(browser, fake_idp.issuer, rp.start(browser), Wallet(fake_idp.issuer), enrolled)
    with pytest.raises(AuthorizationError) as caught:
        rp.finish(callback.replace("iss=http", "iss=https"))
    assert caught.value.error == "iss_mismatch"


def test_deny_and_remembered_consent(fake_idp: FakeIdP, enrolled: Any) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="transport")
    wallet = Wallet(fake_idp.issuer)
    browser = requests.Session()
    denied = browser_login(browser, fake_idp.issuer, rp.start(browser), wallet, enrolled, consent="deny")
    with pytest.raises(AuthorizationError) as caught:
        rp.finish(denied)
    assert caught.value.error == "access_denied"
    first = browser_login(browser, fake_idp.issuer, rp.start(browser), wallet, enrolled, remember=True)
    rp.finish(first)
    again = browser_login(browser, fake_idp.issuer, rp.start(browser), wallet, enrolled, consent=None)
    assert rp.finish(again).sub


def test_same_device_needs_the_browser_session(fake_idp: FakeIdP, enrolled: Any) -> None:
    """Signing from another session (the phone) leaves the browser without a next page."""
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="municipal")
    browser = requests.Session()
    location = rp.start(browser)
    txn = dict(parse_qsl(urlsplit(location).query))["txn"]
    answer = Wallet(fake_idp.issuer).login(txn, authenticator=enrolled)
    assert answer["next"] == "/phone/done"


def test_cross_device_flow_polls_status(fake_idp: FakeIdP, enrolled: Any) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="municipal")
    browser = requests.Session()
    phone = Wallet(fake_idp.issuer)
    callback = browser_login(browser, fake_idp.issuer, rp.start(browser), phone, enrolled, same_device=False)
    assert phone.last_login_options["rp"]["purpose"] == "testing"
    assert rp.finish(callback).claims["acr"] == "device"


def test_registration_errors_surface(fake_idp: FakeIdP) -> None:
    with pytest.raises(RPError) as caught:
        RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="casino")
    assert (caught.value.status, caught.value.error) == (400, "invalid_client_metadata")


def test_invalid_redirect_uri_gets_an_error_page_not_a_redirect(fake_idp: FakeIdP) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="municipal")
    with pytest.raises(RPError) as caught:
        rp.start(requests.Session(), redirect_uri="http://127.0.0.1:9/other")
    assert caught.value.status == 400


def test_authorization_url_carries_pkce_s256_and_nonce(fake_idp: FakeIdP) -> None:
    rp = RelyingParty.register(fake_idp.issuer, redirect_uri=REDIRECT_URI, rp_category="municipal")
    url, state, nonce, verifier = rp.authorization_url(claims={"id_token": {"name": None}}, max_age=60)
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] == b64url(hashlib.sha256(verifier.encode()).digest())
    assert (params["state"], params["nonce"], params["max_age"]) == (state, nonce, "60")
    assert json.loads(params["claims"]) == {"id_token": {"name": None}}
    assert params["client_id"] == rp.client_id and params["redirect_uri"] == REDIRECT_URI
    plain_url, *_ = rp.authorization_url(pkce="plain", nonce=False)
    plain = dict(parse_qsl(urlsplit(plain_url).query))
    assert plain["code_challenge_method"] == "plain" and "nonce" not in plain
