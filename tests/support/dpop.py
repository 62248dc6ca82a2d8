"""The client side of DPoP (RFC 9449) for tests, written with jwcrypto (not the server's joserfc).

A :class:`DPoPKey` makes proofs for one key; every claim and header member can be
overridden or dropped, so each server check can be shown to refuse a bad proof. It keeps
the last ``DPoP-Nonce`` the server sent (RFC 9449 §8) and puts it in the next proof.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any, Mapping

import requests
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

DROP = object()  # an override value that removes the member


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


class DPoPKey:
    """A client's DPoP key pair: ES256 (P-256), PS256 (RSA-2048) or Ed25519 (OKP)."""

    def __init__(self, alg: str = "ES256") -> None:
        if alg == "ES256":
            self.key = JWK.generate(kty="EC", crv="P-256")
        elif alg in ("PS256", "RS256"):
            self.key = JWK.generate(kty="RSA", size=2048)
        elif alg in ("Ed25519", "EdDSA"):
            self.key = JWK.generate(kty="OKP", crv="Ed25519")
        else:
            raise ValueError(f"unsupported DPoP alg {alg}")
        self.alg = alg
        self.nonce: str | None = None

    @property
    def public_jwk(self) -> dict[str, Any]:
        return json.loads(self.key.export_public())

    @property
    def jkt(self) -> str:
        """RFC 7638 SHA-256 thumbprint, base64url (jwcrypto computes it)."""
        return self.key.thumbprint()

    def proof(self, method: str, url: str, *, access_token: str | None = None,
              header: Mapping[str, Any] | None = None, signing_key: JWK | None = None, **claims: Any) -> str:
        """A proof for ``method url``; ``header``/``claims`` override members (DROP removes one)."""
        protected: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}
        payload: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
                                   "iat": int(time.time())}
        if self.nonce:
            payload["nonce"] = self.nonce
        if access_token is not None:
            payload["ath"] = ath(access_token)
        for target, changes in ((protected, header or {}), (payload, claims)):
            for name, value in changes.items():
                if value is DROP:
                    target.pop(name, None)
                else:
                    target[name] = value
        token = JWS(json.dumps(payload).encode())
        if protected.get("alg") == self.alg:
            token.add_signature(signing_key or self.key, alg=self.alg, protected=json.dumps(protected))
            return token.serialize(compact=True)
        # another alg in the header: sign as self.alg, then swap the header in (the server
        # must refuse the alg before it ever looks at the signature)
        token.add_signature(signing_key or self.key, alg=self.alg,
                            protected=json.dumps({**protected, "alg": self.alg}))
        _, body, signature = token.serialize(compact=True).split(".")
        return ".".join((b64url(json.dumps(protected).encode()), body, signature))

    def remember_nonce(self, response: requests.Response) -> bool:
        """Keep the server's ``DPoP-Nonce``; True when the answer asked for it (``use_dpop_nonce``)."""
        if response.headers.get("DPoP-Nonce"):
            self.nonce = response.headers["DPoP-Nonce"]
        challenge = response.headers.get("WWW-Authenticate", "")
        try:
            error = response.json().get("error") if response.content else None
        except ValueError:
            error = None
        return error == "use_dpop_nonce" or 'error="use_dpop_nonce"' in challenge


def send(session: requests.Session, key: DPoPKey, method: str, url: str, *,
         access_token: str | None = None, **kwargs: Any) -> requests.Response:
    """One request with a fresh proof, retried once when the server demands a nonce (§8.1)."""
    for _ in range(2):
        headers = dict(kwargs.pop("headers", None) or {})
        headers["DPoP"] = key.proof(method, url, access_token=access_token)
        if access_token is not None:
            headers["Authorization"] = f"DPoP {access_token}"
        response = session.request(method, url, headers=headers, **kwargs)
        kwargs["headers"] = {k: v for k, v in headers.items() if k not in ("DPoP", "Authorization")}
        if not key.remember_nonce(response):
            return response
    return response
