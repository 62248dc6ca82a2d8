"""Tests for idp.device.webauthn against the software authenticator."""

from __future__ import annotations

import copy
import datetime
import hashlib
import os
import random

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.attestation import AttestationTrust
from idp.device import webauthn as wa
from tests.support.authenticator import (
    FLAG_AT,
    FLAG_BS,
    FLAG_UP,
    FLAG_UV,
    SoftAuthenticator,
    b64url,
    b64url_decode,
)

RP_ID = "idp.example.jp"
ORIGIN = "https://idp.example.jp"
ORIGINS = [ORIGIN, "android:apk-key-hash:abc"]


def challenge() -> bytes:
    return os.urandom(32)


def creation(chal: bytes) -> dict:
    return wa.creation_options(
        rp_id=RP_ID,
        rp_name="Example IdP",
        user_handle=b"u" * 16,
        user_name="account-1",
        user_display_name="Account 1",
        challenge=chal,
    )


def register(auth: SoftAuthenticator, chal: bytes, response: dict, **kwargs) -> wa.RegisteredCredential:
    args = dict(
        credential=response,
        expected_challenge=chal,
        expected_origins=ORIGINS,
        expected_rp_id=RP_ID,
        allow_synced=False,
        attestation_trust=None,
    )
    args.update(kwargs)
    return wa.verify_registration(**args)


def enrolled(**kwargs) -> tuple[SoftAuthenticator, wa.RegisteredCredential]:
    auth = SoftAuthenticator(RP_ID, ORIGIN, **kwargs)
    chal = challenge()
    return auth, register(auth, chal, auth.create(creation(chal)))


def assert_with(cred: wa.RegisteredCredential, chal: bytes, response: dict, **kwargs) -> wa.VerifiedAssertion:
    args = dict(
        credential=response,
        expected_challenge=chal,
        expected_origins=ORIGINS,
        expected_rp_id=RP_ID,
        credential_public_key_cose=cred.public_key_cose,
        current_sign_count=cred.sign_count,
    )
    args.update(kwargs)
    return wa.verify_assertion(**args)


def refused(code: str, fn, *args, **kwargs) -> wa.WebAuthnError:
    with pytest.raises(wa.WebAuthnError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value.description
    return info.value


# --- options --------------------------------------------------------------------------


def test_creation_options_shape():
    chal = challenge()
    options = wa.creation_options(
        rp_id=RP_ID,
        rp_name="Example IdP",
        user_handle=b"\x01" * 16,
        user_name="account-1",
        user_display_name="Account 1",
        challenge=chal,
        exclude_credentials=[b"\x02" * 16],
    )
    assert options["challenge"] == b64url(chal)
    assert options["rp"] == {"name": "Example IdP", "id": RP_ID}
    assert options["user"]["id"] == b64url(b"\x01" * 16)
    assert options["pubKeyCredParams"] == [{"type": "public-key", "alg": -7}]
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["attestation"] == "direct"
    assert options["timeout"] == 300000
    assert options["excludeCredentials"] == [{"id": b64url(b"\x02" * 16), "type": "public-key"}]


def test_request_options_shape():
    chal = challenge()
    options = wa.request_options(rp_id=RP_ID, challenge=chal, allow_credentials=[b"\x03" * 16])
    assert options["challenge"] == b64url(chal)
    assert options["rpId"] == RP_ID
    assert options["userVerification"] == "required"
    assert options["allowCredentials"] == [{"id": b64url(b"\x03" * 16), "type": "public-key"}]


def test_short_challenge_is_a_programming_error():
    with pytest.raises(ValueError):
        wa.request_options(rp_id=RP_ID, challenge=b"short")


# --- registration ---------------------------------------------------------------------


@pytest.mark.parametrize("attestation, fmt", [("none", "none"), ("packed-self", "packed")])
def test_registration_success(attestation, fmt):
    auth, cred = enrolled(attestation=attestation, aaguid=bytes(range(16)))
    assert cred.credential_id == auth.credential_id
    assert cred.spki_der == auth.public_key_spki_der()
    assert cred.public_key.public_numbers() == auth.private_key.public_key().public_numbers()
    assert wa.cose_public_key_to_spki(cred.public_key_cose) == cred.spki_der
    assert cred.attestation_format == fmt
    assert cred.attestation_verified is False
    assert cred.aaguid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert cred.user_verified and not cred.backup_eligible and not cred.backed_up
    assert cred.sign_count == 0


def test_registration_ignores_extra_members():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal))
    response["authenticatorAttachment"] = "something-new"
    response["clientExtensionResults"] = {"credProps": {"rk": True}}
    response["response"]["transports"] = ["internal", "future-transport"]
    response["response"]["publicKeyAlgorithm"] = -7
    assert register(auth, chal, response).credential_id == auth.credential_id


def test_registration_wrong_challenge():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    refused("challenge_mismatch", register, auth, chal, auth.create(creation(chal), challenge_override=challenge()))


def test_registration_wrong_origin():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal), origin="https://evil.example")
    refused("origin_mismatch", register, auth, chal, response)


def test_registration_wrong_rp_id_hash():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal), rp_id_hash_override=hashlib.sha256(b"evil.example").digest())
    refused("rp_id_mismatch", register, auth, chal, response)


def test_registration_without_user_verification():
    auth = SoftAuthenticator(RP_ID, ORIGIN, user_verifying=False)
    chal = challenge()
    refused("user_not_verified", register, auth, chal, auth.create(creation(chal)))


def test_registration_without_user_presence():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal), flags_override=FLAG_UV | FLAG_AT)
    refused("user_not_present", register, auth, chal, response)


def test_registration_backed_up_but_not_eligible_is_malformed():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal), flags_override=FLAG_UP | FLAG_UV | FLAG_AT | FLAG_BS)
    refused("malformed", register, auth, chal, response)


def test_synced_key_refused_unless_allowed():
    auth = SoftAuthenticator(RP_ID, ORIGIN, backup_eligible=True)
    chal = challenge()
    response = auth.create(creation(chal))
    refused("synced_key_refused", register, auth, chal, response)
    cred = register(auth, chal, response, allow_synced=True)
    assert cred.backup_eligible and cred.backed_up


def test_registration_wrong_type():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal), type_override="webauthn.get")
    refused("type_mismatch", register, auth, chal, response)


def test_registration_rejects_non_es256_key():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal))
    att = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    cose = cbor2.dumps({1: 2, 3: -36, -1: 1, -2: bytes(32), -3: bytes(32)})
    head = 37 + 16 + 2 + len(auth.credential_id)
    att["authData"] = att["authData"][:head] + cose
    response["response"]["attestationObject"] = b64url(cbor2.dumps(att))
    refused("unsupported_algorithm", register, auth, chal, response)


def _mutate(response: dict, path: tuple, value) -> dict:
    response = copy.deepcopy(response)
    target = response
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return response


_DELETE = object()
_BIG = "A" * (64 * 1024 + 4)


@pytest.mark.parametrize(
    "path, value",
    [
        (("rawId",), "not base64!"),
        (("rawId",), "QQ=="),
        (("rawId",), _DELETE),
        (("id",), "other"),
        (("type",), "password"),
        (("response",), "nope"),
        (("response", "clientDataJSON"), "%%%"),
        (("response", "clientDataJSON"), b64url(b"{not json")),
        (("response", "clientDataJSON"), b64url(b"[]")),
        (("response", "clientDataJSON"), b64url(b'{"type":"webauthn.create"}')),
        (("response", "clientDataJSON"), b64url(b"\xff\xfe")),
        (("response", "clientDataJSON"), 42),
        (("response", "clientDataJSON"), _BIG),
        (("response", "clientDataJSON"), b64url(b"[" * 40000)),
        (("response", "attestationObject"), "A"),
        (("response", "attestationObject"), _DELETE),
        (("response", "attestationObject"), b64url(b"\xa3\x63fmt")),
        (("response", "attestationObject"), b64url(cbor2.dumps([1, 2]))),
        (("response", "attestationObject"), b64url(cbor2.dumps({"fmt": "none", "authData": b"x" * 10}))),
        (("response", "attestationObject"), b64url(cbor2.dumps({"fmt": 7, "authData": bytes(37)}))),
        (("response", "attestationObject"), b64url(cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": "str"}))),
        (("response", "attestationObject"), _BIG),
        (("response", "attestationObject"), b64url(b"\x81" * 40000 + b"\x01")),
    ],
)
def test_registration_malformed(path, value):
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = _mutate(auth.create(creation(chal)), path, value)
    refused("malformed", register, auth, chal, response)


def test_registration_truncated_attestation_object():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal))
    raw = b64url_decode(response["response"]["attestationObject"])
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        response["response"]["attestationObject"] = b64url(raw[:cut])
        refused("malformed", register, auth, chal, response)


def test_registration_non_mapping_credential():
    refused("malformed", wa.verify_registration, credential="{}", expected_challenge=challenge(),
            expected_origins=ORIGINS, expected_rp_id=RP_ID, allow_synced=False, attestation_trust=None)


def test_none_attestation_with_statement_fails():
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    chal = challenge()
    response = auth.create(creation(chal))
    att = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    att["attStmt"] = {"sig": b"x", "alg": -7}
    response["response"]["attestationObject"] = b64url(cbor2.dumps(att))
    refused("attestation_failed", register, auth, chal, response)


def test_packed_self_attestation_bad_signature_fails():
    auth = SoftAuthenticator(RP_ID, ORIGIN, attestation="packed-self")
    chal = challenge()
    response = auth.create(creation(chal))
    att = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    att["attStmt"]["sig"] = att["attStmt"]["sig"][:-1] + bytes([att["attStmt"]["sig"][-1] ^ 1])
    response["response"]["attestationObject"] = b64url(cbor2.dumps(att))
    refused("attestation_failed", register, auth, chal, response)


# --- attestation roots ----------------------------------------------------------------


def _cert(subject: x509.Name, issuer: x509.Name, key, signer, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Vendor"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@pytest.fixture(scope="module")
def attestation_ca():
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(_name("Test Root"), _name("Test Root"), root_key, root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(_name("Test Leaf"), root.subject, leaf_key, root_key, ca=False)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(_name("Other Root"), _name("Other Root"), other_key, other_key, ca=True)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return {
        "leaf_key": leaf_key,
        "chain": (leaf.public_bytes(serialization.Encoding.DER),),
        "root_pem": pem(root),
        "other_pem": pem(other),
    }


def _packed(ca) -> SoftAuthenticator:
    return SoftAuthenticator(
        RP_ID, ORIGIN, attestation="packed", attestation_key=ca["leaf_key"], attestation_chain=ca["chain"]
    )


def trust(*pems: bytes) -> AttestationTrust:
    return AttestationTrust(operator_roots=pems)


def test_packed_x5c_without_roots_is_not_verified(attestation_ca):
    auth = _packed(attestation_ca)
    chal = challenge()
    cred = register(auth, chal, auth.create(creation(chal)))
    assert cred.attestation_format == "packed" and cred.attestation_verified is False
    assert cred.key_protection == "unverified"


def test_packed_x5c_chaining_to_roots_is_hardware(attestation_ca):
    auth = _packed(attestation_ca)
    chal = challenge()
    cred = register(auth, chal, auth.create(creation(chal)), attestation_trust=trust(attestation_ca["root_pem"]))
    assert cred.attestation_verified is True and cred.key_protection == "hardware"


def test_packed_x5c_chaining_to_no_trusted_root_is_unverified(attestation_ca):
    """WebAuthn L3 §7.1: a genuine statement nobody vouches for is enrolled, untrusted."""
    auth = _packed(attestation_ca)
    chal = challenge()
    cred = register(auth, chal, auth.create(creation(chal)), attestation_trust=trust(attestation_ca["other_pem"]))
    assert cred.attestation_verified is False and cred.key_protection == "unverified"


def test_forged_packed_signature_is_refused_even_when_chained(attestation_ca):
    auth = SoftAuthenticator(RP_ID, ORIGIN, attestation="packed", attestation_key=ec.generate_private_key(
        ec.SECP256R1()), attestation_chain=attestation_ca["chain"])
    chal = challenge()
    refused("attestation_failed", register, auth, chal, auth.create(creation(chal)),
            attestation_trust=trust(attestation_ca["root_pem"]))


def test_roots_configured_self_attestation_and_none_are_unverified(attestation_ca):
    roots = trust(attestation_ca["root_pem"])
    for kind, fmt in (("packed-self", "packed"), ("none", "none")):
        auth = SoftAuthenticator(RP_ID, ORIGIN, attestation=kind)
        chal = challenge()
        cred = register(auth, chal, auth.create(creation(chal)), attestation_trust=roots)
        assert cred.attestation_format == fmt and cred.attestation_verified is False
        assert cred.key_protection == "unverified"


# --- assertion ------------------------------------------------------------------------


def test_assertion_success_and_extra_members_ignored():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get(wa.request_options(rp_id=RP_ID, challenge=chal))
    response["clientExtensionResults"] = {"appid": False}
    response["authenticatorAttachment"] = "cross-platform"
    assert wa.credential_id_from(response) == cred.credential_id
    result = assert_with(cred, chal, response)
    assert result == wa.VerifiedAssertion(
        credential_id=cred.credential_id, new_sign_count=1, user_verified=True, user_present=True, backed_up=False
    )


def test_assertion_null_user_handle_accepted():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)})
    response["response"]["userHandle"] = None
    assert assert_with(cred, chal, response).new_sign_count == 1


def test_assertion_successive_counters():
    auth, cred = enrolled(sign_count_start=10)
    count = cred.sign_count
    for _ in range(3):
        chal = challenge()
        count = assert_with(cred, chal, auth.get({"challenge": b64url(chal)}), current_sign_count=count).new_sign_count
    assert count == 13


def test_assertion_challenge_replay_and_mismatch():
    auth, cred = enrolled()
    first, second = challenge(), challenge()
    old = auth.get({"challenge": b64url(first)})
    assert_with(cred, first, old)
    refused("challenge_mismatch", assert_with, cred, second, old)
    refused("challenge_mismatch", assert_with, cred, second, auth.get({"challenge": b64url(second)}, challenge_override=first))


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"origin": "https://idp.example.jp.evil.example"}, "origin_mismatch"),
        ({"rp_id_hash_override": hashlib.sha256(b"evil.example").digest()}, "rp_id_mismatch"),
        ({"up": False}, "user_not_present"),
        ({"uv": False}, "user_not_verified"),
        ({"type_override": "webauthn.create"}, "type_mismatch"),
        ({"sign_with": ec.generate_private_key(ec.SECP256R1())}, "bad_signature"),
    ],
)
def test_assertion_refusals(kwargs, code):
    auth, cred = enrolled()
    chal = challenge()
    refused(code, assert_with, cred, chal, auth.get({"challenge": b64url(chal)}, **kwargs))


def test_assertion_uv_optional_when_not_required():
    auth, cred = enrolled()
    chal = challenge()
    result = assert_with(cred, chal, auth.get({"challenge": b64url(chal)}, uv=False), require_user_verification=False)
    assert result.user_verified is False


def test_assertion_corrupted_signature():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)})
    response["response"]["signature"] = b64url(b"\x30\x02\x00\x00")
    refused("bad_signature", assert_with, cred, chal, response)


@pytest.mark.parametrize("clone_counter", [5, 4])
def test_assertion_counter_regression(clone_counter):
    auth, cred = enrolled(sign_count_start=4)
    chal = challenge()
    assert assert_with(cred, chal, auth.get({"challenge": b64url(chal)})).new_sign_count == 5
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)}, counter=clone_counter)
    refused("counter_regression", assert_with, cred, chal, response, current_sign_count=5)


def test_assertion_counter_reset_to_zero_is_regression():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)}, counter=0)
    refused("counter_regression", assert_with, cred, chal, response, current_sign_count=3)


def test_assertion_counter_zero_zero_passes():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)}, counter=0)
    assert assert_with(cred, chal, response, current_sign_count=0).new_sign_count == 0


def test_forged_assertion_with_low_counter_is_bad_signature_not_clone():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)}, counter=0, sign_with=ec.generate_private_key(ec.SECP256R1()))
    refused("bad_signature", assert_with, cred, chal, response, current_sign_count=7)


@pytest.mark.parametrize(
    "path, value",
    [
        (("response", "authenticatorData"), b64url(b"short")),
        (("response", "authenticatorData"), _DELETE),
        (("response", "signature"), "!!"),
        (("response", "signature"), _BIG),
        (("response", "userHandle"), 5),
        (("response", "userHandle"), "a+b"),
        (("rawId",), "AAA="),
        (("type",), None),
        (("response",), []),
    ],
)
def test_assertion_malformed(path, value):
    auth, cred = enrolled()
    chal = challenge()
    response = _mutate(auth.get({"challenge": b64url(chal)}), path, value)
    refused("malformed", assert_with, cred, chal, response)


def test_assertion_with_bad_stored_key():
    auth, cred = enrolled()
    chal = challenge()
    response = auth.get({"challenge": b64url(chal)})
    refused("malformed", assert_with, cred, chal, response, credential_public_key_cose=b"")
    refused("malformed", assert_with, cred, chal, response, credential_public_key_cose=b"\x04" + bytes(64))
    rsa_like = cbor2.dumps({1: 3, 3: -257, -1: b"\x01" * 256, -2: b"\x01\x00\x01"})
    refused("unsupported_algorithm", assert_with, cred, chal, response, credential_public_key_cose=rsa_like)


def test_credential_id_from_is_strict():
    assert wa.credential_id_from({"id": "AQID", "rawId": "AQID"}) == b"\x01\x02\x03"
    for bad in ({"id": "AQID"}, {"id": "AQIE", "rawId": "AQID"}, {"id": "", "rawId": ""}, [], {"id": "AQI=", "rawId": "AQI="}):
        refused("malformed", wa.credential_id_from, bad)


def test_string_origins_are_a_programming_error():
    auth, cred = enrolled()
    chal = challenge()
    with pytest.raises(TypeError):
        assert_with(cred, chal, auth.get({"challenge": b64url(chal)}), expected_origins=ORIGIN)


def _flip(raw: bytes, rng: random.Random) -> bytes:
    raw = bytearray(raw)
    at = rng.randrange(len(raw))
    if rng.random() < 0.5:
        raw[at] ^= 1 << rng.randrange(8)
        return bytes(raw)
    return bytes(raw[:at])


def test_mutated_responses_raise_only_webauthn_error():
    rng = random.Random(20240501)
    auth = SoftAuthenticator(RP_ID, ORIGIN, attestation="packed-self")
    chal = challenge()
    created = auth.create(creation(chal))
    cred = register(auth, chal, created)
    asserted = auth.get({"challenge": b64url(chal)})
    cases = [(created, register, ("clientDataJSON", "attestationObject"))]
    cases.append((asserted, lambda _a, c, r: assert_with(cred, c, r), ("clientDataJSON", "authenticatorData", "signature")))
    for base, verify, members in cases:
        for _ in range(300):
            response = copy.deepcopy(base)
            member = rng.choice(members)
            response["response"][member] = b64url(_flip(b64url_decode(response["response"][member]), rng))
            try:
                verify(auth, chal, response)
            except wa.WebAuthnError:
                pass
