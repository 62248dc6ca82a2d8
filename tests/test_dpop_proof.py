"""DPoP proof checks (RFC 9449 §4.3), one by one, each with the proof that must pass beside it.

Proofs are made with jwcrypto (tests/support/dpop.py), checked by the server's joserfc code.
"""

from __future__ import annotations

import time

import pytest

from idp.oidc import dpop
from tests.support.dpop import DROP, DPoPKey, b64url

URL = "https://idp.example/token"
SECRET = "s" * 64


def verify(proof: str | list[str], **kwargs):  # type: ignore[no-untyped-def]
    kwargs.setdefault("method", "POST")
    kwargs.setdefault("url", URL)
    kwargs.setdefault("server_secret", SECRET)
    return dpop.verify_proof(proof if isinstance(proof, list) else [proof], **kwargs)


def refused(proof: str | list[str], reason: str, error: str = "invalid_dpop_proof",
            **kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(dpop.DPoPError) as caught:
        verify(proof, **kwargs)
    assert caught.value.error == error
    assert reason in caught.value.description, caught.value.description


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey()


@pytest.mark.parametrize("alg", ["ES256", "PS256", "Ed25519"])
def test_a_good_proof_gives_the_rfc7638_thumbprint(alg):
    key = DPoPKey(alg)
    proof = verify(key.proof("POST", URL))
    assert proof.jkt == key.jkt  # jwcrypto's thumbprint equals joserfc's
    assert proof.claims["htm"] == "POST"


def test_exactly_one_proof_header(key):
    refused([], "exactly one")
    refused([key.proof("POST", URL), key.proof("POST", URL)], "exactly one")


@pytest.mark.parametrize("text", ["", "abc", "a.b", "a.b.c.d.e", "!!!.@@@.###", "x" * 9000])
def test_a_proof_must_be_a_compact_jws(text):
    refused(text, "DPoP proof")


def test_typ_must_be_dpop_jwt(key):
    refused(key.proof("POST", URL, header={"typ": "JWT"}), "typ")
    refused(key.proof("POST", URL, header={"typ": DROP}), "typ")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES512", "EdDSA"])
def test_alg_must_be_a_supported_asymmetric_one(key, alg):
    refused(key.proof("POST", URL, header={"alg": alg}), "alg")


def test_rs256_keys_cannot_make_proofs():
    refused(DPoPKey("RS256").proof("POST", URL), "alg")


def test_jwk_must_be_present_and_public(key):
    refused(key.proof("POST", URL, header={"jwk": DROP}), "jwk")
    private = {**key.public_jwk, "d": b64url(b"\x01" * 32)}
    refused(key.proof("POST", URL, header={"jwk": private}), "public key")
    refused(key.proof("POST", URL, header={"jwk": {"kty": "oct", "k": b64url(b"k" * 32)}}), "jwk")
    refused(key.proof("POST", URL, header={"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}), "jwk")


def test_signature_must_verify_with_the_header_key(key):
    other = DPoPKey()
    refused(key.proof("POST", URL, signing_key=other.key), "signature")
    head, body, signature = key.proof("POST", URL).split(".")
    refused(".".join((head, b64url(b'{"jti":"x","htm":"POST","htu":"' + URL.encode() + b'","iat":1}'), signature)),
            "signature")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_required_claims(key, claim):
    refused(key.proof("POST", URL, **{claim: DROP}), claim)


def test_htm_must_be_the_request_method(key):
    refused(key.proof("GET", URL), "htm")
    refused(key.proof("post", URL), "htm")


def test_htu_is_compared_without_query_and_fragment_after_normalisation(key):
    verify(key.proof("POST", URL + "?x=1#frag"))
    verify(key.proof("POST", "HTTPS://IDP.example:443/token"))
    refused(key.proof("POST", "https://idp.example/token/"), "htu")
    refused(key.proof("POST", "https://evil.example/token"), "htu")
    refused(key.proof("POST", "http://idp.example/token"), "htu")
    refused(key.proof("POST", "https://idp.example:8443/token"), "htu")
    refused(key.proof("POST", URL, htu=["https://idp.example/token"]), "htu")


def test_iat_window(key):
    now = time.time()
    verify(key.proof("POST", URL, iat=int(now) - dpop.PROOF_MAX_AGE_SECONDS + 5))
    refused(key.proof("POST", URL, iat=int(now) - dpop.PROOF_MAX_AGE_SECONDS - 5), "too old")
    refused(key.proof("POST", URL, iat=int(now) + dpop.CLOCK_SKEW_SECONDS + 30), "future")
    refused(key.proof("POST", URL, iat="now"), "iat")
    refused(key.proof("POST", URL, iat=True), "iat")


def test_nonce_demanded_missing_unknown_and_rotated(key):
    now = time.time()
    refused(key.proof("POST", URL), "requires a DPoP nonce", error="use_dpop_nonce", require_nonce=True)
    current = dpop.current_nonce(SECRET, now=now)
    assert verify(key.proof("POST", URL, nonce=current), require_nonce=True, now=now)
    previous = dpop.current_nonce(SECRET, now=now - dpop.NONCE_WINDOW_SECONDS)
    assert previous != current
    verify(key.proof("POST", URL, nonce=previous), require_nonce=True, now=now)
    stale = dpop.current_nonce(SECRET, now=now - 2 * dpop.NONCE_WINDOW_SECONDS)
    refused(key.proof("POST", URL, nonce=stale), "nonce", error="use_dpop_nonce", require_nonce=True, now=now)
    foreign = dpop.current_nonce("another deployment's secret", now=now)
    refused(key.proof("POST", URL, nonce=foreign), "nonce", error="use_dpop_nonce", require_nonce=True, now=now)
    refused(key.proof("POST", URL, nonce="garbage!"), "nonce", error="use_dpop_nonce", now=now)


def test_ath_binds_the_proof_to_the_access_token(key):
    verify(key.proof("GET", URL, access_token="token-1"), method="GET", access_token="token-1")
    refused(key.proof("GET", URL, access_token="token-2"), "ath", method="GET", access_token="token-1")
    refused(key.proof("GET", URL), "ath", method="GET", access_token="token-1")


def test_replay_key_depends_on_key_and_jti():
    one, two = DPoPKey(), DPoPKey()
    a = verify(one.proof("POST", URL, jti="same"))
    b = verify(two.proof("POST", URL, jti="same"))
    assert dpop.replay_key(a) != dpop.replay_key(b)
    assert len(dpop.replay_key(a)) <= 128


def test_jkt_syntax():
    assert dpop.is_jkt(DPoPKey().jkt)
    for bad in ("", "short", "a" * 42 + "=", "a" * 44, None, 7, "a" * 42 + "+"):
        assert not dpop.is_jkt(bad)
