"""RP onboarding on a production (https) issuer (RFC 7591 §2.3, §3, §3.2.1).

The server runs over real HTTP on loopback but believes it is ``https://id.example.jp``:
registration is then never open, and the category comes from whoever vouches for the RP
(a category-bound initial access token, a trust authority's software statement, or the
operator's master token), never from the RP's own say-so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey

from idp.clients import initial_access
from idp.clients.software_statement import sign
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import db, run_cli

ISSUER = "https://id.example.jp"
MASTER = "master-registration-token-for-tests-0123456789"
REDIRECT = "https://rp.example/cb"


@pytest.fixture(scope="module")
def authority_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[ECKey, Path]:
    """The trust authority's signing key, and the JWKS file the IdP is configured with."""
    folder = tmp_path_factory.mktemp("authority")
    key = ECKey.generate_key("P-256", auto_kid=True)
    (folder / "authority.jwk").write_text(json.dumps(key.as_dict(private=True)))
    (folder / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key, folder


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any,
         authority_key: tuple[ECKey, Path]) -> Iterator[RunningIdP]:
    yield from start_idp(tmp_path_factory.mktemp("prod"), jpki_ca, issuer=ISSUER,
                         env={"IDP_TRUST_AUTHORITY_JWKS": str(authority_key[1] / "jwks.json"),
                              "IDP_REGISTRATION_TOKEN": MASTER})


def register(idp: RunningIdP, body: dict[str, Any], token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(idp.base_url + "/register", json=body, headers=headers, timeout=10)


def mint(idp: RunningIdP, monkeypatch: pytest.MonkeyPatch, category: str, *extra: str) -> str:
    result = run_cli(idp, monkeypatch, "clients", "token", "--category", category, *extra)
    assert result.code == 0, result
    return result.out.strip()


def statement(key: ECKey, **claims: Any) -> str:
    base = {"iss": "https://authority.example", "iat": int(time.time()), "rp_category": "medical",
            "client_name": "Authority-vetted clinic", "redirect_uris": ["https://clinic.example/cb"]}
    return sign({**base, **claims}, key.as_dict(private=True))


def test_production_issuer_refuses_anonymous_registration(prod: RunningIdP) -> None:
    assert not prod.settings.development
    response = register(prod, {"rp_category": "municipal", "redirect_uris": [REDIRECT]})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token" and "WWW-Authenticate" in response.headers
    assert register(prod, {"redirect_uris": [REDIRECT]}, token="guessed").status_code == 401
    basic = requests.post(prod.base_url + "/register", json={"redirect_uris": [REDIRECT]},
                          headers={"Authorization": "Basic Zm9vOmJhcg=="}, timeout=10)
    assert basic.status_code == 401


def test_category_bound_token_registers_only_its_category(prod: RunningIdP, monkeypatch) -> None:
    token = mint(prod, monkeypatch, "transport", "--uses", "3")
    # the stock request names no category: the token decides
    response = register(prod, {"redirect_uris": [REDIRECT], "client_name": "Railway"}, token)
    assert response.status_code == 201, response.text
    assert response.json()["rp_category"] == "transport"
    same = register(prod, {"redirect_uris": [REDIRECT], "rp_category": "transport"}, token)
    assert same.status_code == 201 and same.json()["rp_category"] == "transport"
    # a transport token asking for financial is refused, and the refusal spends no use
    greedy = register(prod, {"redirect_uris": [REDIRECT], "rp_category": "financial"}, token)
    assert greedy.status_code == 400 and greedy.json()["error"] == "invalid_client_metadata"
    assert register(prod, {"redirect_uris": [REDIRECT]}, token).status_code == 201  # the third use
    assert register(prod, {"redirect_uris": [REDIRECT]}, token).status_code == 401  # used up


def test_base64_form_of_a_token_is_the_same_token(prod: RunningIdP, monkeypatch) -> None:
    """pyoidc sends a non-JWT initial access token base64-encoded: that form is accepted, once;
    base64 of anything else is not."""
    import base64

    token = mint(prod, monkeypatch, "municipal")
    wrong = base64.b64encode(b"not-a-token").decode()
    assert register(prod, {"redirect_uris": [REDIRECT]}, wrong).status_code == 401
    encoded = base64.b64encode(token.encode()).decode()
    assert register(prod, {"redirect_uris": [REDIRECT]}, encoded).status_code == 201
    assert register(prod, {"redirect_uris": [REDIRECT]}, token).status_code == 401  # its one use is spent


def test_initial_access_token_expires_and_is_stored_hashed(prod: RunningIdP, monkeypatch) -> None:
    token = mint(prod, monkeypatch, "municipal", "--expires-in", "60")
    with db(prod) as session:
        from idp.storage.models import InitialAccessToken

        rows = session.query(InitialAccessToken).all()
        assert rows and all(token not in (row.token_hash,) for row in rows)
        row = next(r for r in rows if r.token_hash == initial_access.digest(token))
        row.expires_at = row.expires_at.replace(year=2000)
    assert register(prod, {"redirect_uris": [REDIRECT]}, token).status_code == 401


def test_last_use_is_spent_once_under_concurrency(prod: RunningIdP, monkeypatch) -> None:
    """The conditional UPDATE admits exactly one of several simultaneous registrations."""
    token = mint(prod, monkeypatch, "municipal", "--uses", "1")
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def race() -> None:
        barrier.wait()
        statuses.append(register(prod, {"redirect_uris": [REDIRECT]}, token).status_code)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 401, 401, 401, 401, 401], statuses


def test_master_token_registers_any_category_from_the_body(prod: RunningIdP) -> None:
    response = register(prod, {"redirect_uris": ["https://bank.example/cb"], "rp_category": "medical"}, MASTER)
    assert response.status_code == 201 and response.json()["rp_category"] == "medical"
    missing = register(prod, {"redirect_uris": [REDIRECT]}, MASTER)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_client_metadata"


def test_software_statement_sets_the_category(prod: RunningIdP, authority_key) -> None:
    key, _ = authority_key
    signed = statement(key, software_id="clinic-app")
    # the body asks for more than the authority signed: the statement's values win
    response = register(prod, {"software_statement": signed, "rp_category": "financial",
                               "redirect_uris": ["https://elsewhere.example/cb"], "client_name": "Bank"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rp_category"] == "medical"
    assert body["redirect_uris"] == ["https://clinic.example/cb"]
    assert body["client_name"] == "Authority-vetted clinic" and body["software_id"] == "clinic-app"
    assert body["software_statement"] == signed  # RFC 7591 §3.2.1: returned unmodified


def test_statement_and_token_must_agree(prod: RunningIdP, monkeypatch, authority_key) -> None:
    token = mint(prod, monkeypatch, "transport")
    response = register(prod, {"software_statement": statement(authority_key[0])}, token)
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


def _tampered(key: ECKey) -> str:
    header, payload, signature = statement(key).split(".")
    forged = jwt.encode({"alg": "ES256", "kid": key.kid}, {"iss": "x", "iat": int(time.time()),
                                                            "rp_category": "financial"},
                        ECKey.generate_key("P-256")).split(".")[1]
    return ".".join((header, forged, signature))


@pytest.mark.parametrize("case", ["tampered", "expired", "unknown_key", "unsigned", "garbage", "no_category",
                                  "bad_category", "future_iat", "other_audience", "not_a_string"])
def test_bad_statements_are_refused(prod: RunningIdP, authority_key, case: str) -> None:
    key, _ = authority_key
    now = int(time.time())
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    value: Any = {
        "tampered": lambda: _tampered(key),
        "expired": lambda: statement(key, iat=now - 7200, exp=now - 3600),
        "unknown_key": lambda: statement(stranger),
        "unsigned": lambda: "eyJhbGciOiJub25lIn0." + statement(key).split(".")[1] + ".",
        "garbage": lambda: "not.a.jwt",
        "no_category": lambda: sign({"iss": "a", "iat": now, "redirect_uris": [REDIRECT]}, key.as_dict(private=True)),
        "bad_category": lambda: statement(key, rp_category="casino"),
        "future_iat": lambda: statement(key, iat=now + 3600),
        "other_audience": lambda: statement(key, aud="https://other-idp.example"),
        "not_a_string": lambda: {"iss": "a"},
    }[case]()
    response = register(prod, {"software_statement": value, "redirect_uris": [REDIRECT]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_software_statement"


def test_statement_without_a_configured_authority_is_unapproved(idp: RunningIdP, authority_key) -> None:
    response = register(idp, {"software_statement": statement(authority_key[0]), "redirect_uris": [REDIRECT]})
    assert response.status_code == 400 and response.json()["error"] == "unapproved_software_statement"


def test_authority_sign_command_produces_an_accepted_statement(prod: RunningIdP, monkeypatch, authority_key) -> None:
    _, folder = authority_key
    result = run_cli(prod, monkeypatch, "authority", "sign", "--category", "transport", "--name", "Bus company",
                     "--redirect-uri", "https://bus.example/cb", "--key", str(folder / "authority.jwk"),
                     "--audience", ISSUER, "--expires-in", "600")
    assert result.code == 0, result
    response = register(prod, {"software_statement": result.out.strip()})
    assert response.status_code == 201, response.text
    assert response.json()["rp_category"] == "transport" and response.json()["client_name"] == "Bus company"


def test_authority_keygen_writes_a_private_key_and_prints_the_jwks(prod, monkeypatch, tmp_path) -> None:
    result = run_cli(prod, monkeypatch, "authority", "keygen", "--key", str(tmp_path / "k.jwk"),
                     "--jwks", str(tmp_path / "jwks.json"))
    assert result.code == 0, result
    assert (tmp_path / "k.jwk").stat().st_mode & 0o777 == 0o600
    published = json.loads(result.out)
    assert all("d" not in k for k in published["keys"]) and published == json.loads((tmp_path / "jwks.json").read_text())
    again = run_cli(prod, monkeypatch, "authority", "keygen", "--key", str(tmp_path / "k.jwk"))
    assert again.code == 1 and "exists" in again.err


def test_stock_request_is_narrowed_to_the_code_flow(prod: RunningIdP) -> None:
    """RFC 7591 §3.2.1: code, id_token, code id_token and the implicit grant → 201, code only."""
    response = register(prod, {"rp_category": "municipal", "redirect_uris": [REDIRECT],
                               "response_types": ["code", "id_token", "code id_token"],
                               "grant_types": ["authorization_code", "implicit"]}, MASTER)
    assert response.status_code == 201, response.text
    assert response.json()["response_types"] == ["code"]
    assert response.json()["grant_types"] == ["authorization_code"]
    nothing = register(prod, {"rp_category": "municipal", "redirect_uris": [REDIRECT],
                              "response_types": ["id_token", "token"]}, MASTER)
    assert nothing.status_code == 400 and nothing.json()["error"] == "invalid_client_metadata"


def test_token_command_refuses_bad_values(prod: RunningIdP, monkeypatch) -> None:
    for extra in (("--uses", "-1"), ("--expires-in", "5"), ("--expires-in", "999999999")):
        result = run_cli(prod, monkeypatch, "clients", "token", "--category", "municipal", *extra)
        assert result.code == 1 and result.err.startswith("idp: ") and "Traceback" not in result.err


def test_disabled_client_tokens_stop_working_on_production(prod: RunningIdP, monkeypatch) -> None:
    """``idp clients disable`` revokes the client's tokens by one UPDATE and the client can no
    longer authenticate (the end-to-end login variant is in tests/test_client_commands.py)."""
    import secrets
    from datetime import datetime, timezone

    from idp.oidc.server import token_hash
    from idp.storage.models import Account, Token

    client = register(prod, {"rp_category": "municipal", "redirect_uris": [REDIRECT]}, MASTER).json()
    credentials = (client["client_id"], client["client_secret"])
    access = secrets.token_urlsafe(32)
    with db(prod) as session:
        account = Account(id=secrets.token_hex(8), name="前橋　太郎", gender="1", date_of_birth="419800101",
                          address="群馬県前橋市", verified_at=datetime.now(timezone.utc))
        session.add(account)
        session.flush()
        session.add(Token(access_token_hash=token_hash(access), client_id=client["client_id"], account_id=account.id,
                          scope="openid", auth_time=int(time.time()), acr="x", amr=["hwk"],
                          issued_at=int(time.time()), expires_in=600))

    def introspect() -> requests.Response:
        return requests.post(prod.base_url + "/introspect", data={"token": access}, auth=credentials, timeout=10)

    assert introspect().json()["active"] is True
    result = run_cli(prod, monkeypatch, "clients", "disable", client["client_id"])
    assert result.code == 0 and "1 tokens revoked" in result.out, result
    refused = introspect()
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    with db(prod) as session:
        assert session.query(Token).filter_by(client_id=client["client_id"]).one().revoked is True
    token = requests.post(prod.base_url + "/token", auth=credentials, timeout=10,
                          data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT})
    assert token.status_code == 401 and token.json()["error"] == "invalid_client"
    userinfo = requests.get(prod.base_url + "/userinfo", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert userinfo.status_code == 401
