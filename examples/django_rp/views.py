"""The home page: who signed in (the pairwise sub) and the claims the IdP released."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return HttpResponse('<a href="/oidc/authenticate/">Sign in with JP Digital ID</a>')
    return JsonResponse({"user": request.user.username, "claims": request.session.get("jpdid_claims", {})})
