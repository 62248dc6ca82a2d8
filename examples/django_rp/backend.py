"""The mozilla-django-oidc backend adapted to this IdP: people are keyed by the pairwise
``sub`` (there is no e-mail address: the IdP releases only what the RP's category allows)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend


class JpDigitalIdBackend(OIDCAuthenticationBackend):
    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        self.request.session["jpdid_claims"] = claims  # shown on the home page
        return self.UserModel.objects.filter(username=claims["sub"])

    def create_user(self, claims: dict[str, Any]) -> Any:
        return self.UserModel.objects.create_user(claims["sub"])


def logout_url(request: HttpRequest) -> str:
    """RP-Initiated Logout 1.0 §2 with the ID token as a hint."""
    query = {"client_id": settings.OIDC_RP_CLIENT_ID,
             "post_logout_redirect_uri": request.build_absolute_uri("/")}
    id_token = request.session.get("oidc_id_token")
    if id_token:
        query["id_token_hint"] = id_token
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{urlencode(query)}"
