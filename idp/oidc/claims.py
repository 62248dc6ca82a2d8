"""What an RP receives about a person: the one place claims are chosen and ``sub`` is made.

Rules, in order:
1. the claims requested: scopes (OIDC Core §5.4) plus the ``claims`` parameter (§5.5);
2. intersected with the RP category's policy (PROTOCOL §5): a claim the category may not
   receive is silently left out, never an error; a transport RP asking for the birth date
   gets the derived age flags instead;
3. intersected with what the person consented to;
4. placed per §5.4: scope claims at the UserInfo endpoint, ``claims.id_token`` members in
   the ID token (an access token is always issued, so scope claims are not duplicated into
   the ID token, which keeps the ID token small and its audience's view minimal).
Age flags are computed at release time in Japan time from the verified birth date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from authlib.oauth2.rfc6749 import scope_to_list

from idp import bounded_json
from idp.oidc import verified_claims
from idp.pairwise import pairwise_sub
from idp.policy import AGE_OVER, CategoryPolicy
from idp.proofing.jpki import JpkiAttributes
from idp.storage.models import Account, JpkiBinding

JST = timezone(timedelta(hours=9))
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "birthdate", "gender"),
    "address": ("address",),
    "age": ("age_over_18", "age_over_65"),
}


class ClaimsRequestError(ValueError):
    """A ``claims`` parameter of the wrong shape (OIDC Core §5.5): ``invalid_request``."""


def parse_claims_parameter(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        if len(raw) > 8192:
            raise ClaimsRequestError("claims parameter too large")
        try:
            raw = bounded_json.loads(raw)
        except ValueError:
            raise ClaimsRequestError("claims parameter is not JSON") from None
    if not isinstance(raw, dict):
        raise ClaimsRequestError("claims parameter must be a JSON object")
    for member in ("userinfo", "id_token"):
        value = raw.get(member)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ClaimsRequestError(f"claims.{member} must be a JSON object")
        for name, spec in value.items():
            if name == "verified_claims":
                try:
                    verified_claims.check_request(spec, f"claims.{member}.verified_claims")
                except verified_claims.VerifiedClaimsRequestError as exc:
                    raise ClaimsRequestError(str(exc)) from None
                continue
            if spec is not None and not isinstance(spec, dict):
                raise ClaimsRequestError(f"claims.{member}.{name} must be null or an object")
            try:
                verified_claims.check_purpose(spec, f"claims.{member}.{name}")
            except verified_claims.VerifiedClaimsRequestError as exc:
                raise ClaimsRequestError(str(exc)) from None
    return {k: raw[k] for k in ("userinfo", "id_token") if isinstance(raw.get(k), dict)}


def age_claims_for(policy: CategoryPolicy) -> tuple[str, ...]:
    return tuple(f"age_over_{n}" for n in policy.age_thresholds)


def _substitute(names: Iterable[str], policy: CategoryPolicy) -> set[str]:
    """Map requested names onto what the policy allows (birthdate → age flags where needed)."""
    wanted = set(names)
    if "birthdate" in wanted and "birthdate" not in policy.claims:
        wanted |= set(age_claims_for(policy))
    return wanted & policy.claims


@dataclass(frozen=True)
class Release:
    """The claim names an authorization will release, by channel."""

    userinfo: frozenset[str]
    id_token: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.userinfo | self.id_token


def plan_release(scope: str, claims_request: Mapping[str, Any] | None, policy: CategoryPolicy) -> Release:
    scopes = scope_to_list(scope or "") or []
    from_scopes = {claim for s in scopes for claim in SCOPE_CLAIMS.get(s, ())}
    requested_userinfo = set((claims_request or {}).get("userinfo", {}) or {})
    requested_id_token = set((claims_request or {}).get("id_token", {}) or {})
    return Release(
        userinfo=frozenset(_substitute(from_scopes | requested_userinfo, policy)),
        id_token=frozenset(_substitute(requested_id_token, policy)),
    )


def attributes_of(account: Account) -> JpkiAttributes:
    return JpkiAttributes(name=account.name, name_substitution=account.name_substitution,
                          gender=account.gender, date_of_birth=account.date_of_birth,
                          address=account.address, address_substitution=account.address_substitution)


def _age_on(birthdate: date, today: date) -> int:
    return today.year - birthdate.year - ((today.month, today.day) < (birthdate.month, birthdate.day))


def claim_values(account: Account, names: Iterable[str], *, now: datetime | None = None) -> dict[str, Any]:
    """Values for ``names``; attributes whose card certificate was revoked are withheld
    until the person proves again (README, "JPKI revocation")."""
    if not account.attributes_current:
        return {}
    attrs = attributes_of(account)
    birthdate = attrs.birthdate
    today = (now or datetime.now(timezone.utc)).astimezone(JST).date()
    values: dict[str, Any] = {}
    for name in names:
        if name == "name":
            values["name"] = attrs.name
        elif name == "birthdate" and birthdate:
            values["birthdate"] = birthdate.isoformat()
        elif name == "gender" and attrs.gender_claim:
            values["gender"] = attrs.gender_claim
        elif name == "address":
            values["address"] = {"formatted": attrs.address}
        elif (match := AGE_OVER.match(name)) and birthdate:
            values[name] = _age_on(birthdate, today) >= int(match.group(1))
    return values


def current_proof(account: Account) -> JpkiBinding | None:
    """The newest unrevoked JPKI proof of the account (the evidence behind verified_claims)."""
    proofs = [b for b in account.jpki_bindings if b.revoked_at is None]
    return max(proofs, key=lambda b: b.verified_at) if proofs else None


def release_values(account: Account, names: Iterable[str], *, claims_request: Mapping[str, Any] | None,
                   channel: str, sector: str, salt: bytes, now: datetime | None = None) -> dict[str, Any]:
    """The values one channel (``userinfo`` or ``id_token``) releases, ``verified_claims`` included."""
    names = set(names)
    values = claim_values(account, names - {"verified_claims"}, now=now)
    if "verified_claims" in names:
        request = ((claims_request or {}).get(channel) or {}).get("verified_claims")
        if request is not None:
            released = verified_claims.build(
                request, account=account, values=claim_values(account, verified_claims.CLAIMS, now=now),
                binding=current_proof(account), sector=sector, salt=salt)
            if released is not None:
                values["verified_claims"] = released
    return values


def subject(account_id: str, sector: str, salt: bytes) -> str:
    return pairwise_sub(sector=sector, account_id=account_id, salt=salt)
