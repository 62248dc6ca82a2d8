"""Routes: mozilla-django-oidc's /oidc/authenticate/, /oidc/callback/, /oidc/logout/, and a home page."""

from django.urls import include, path

from examples.django_rp import views

urlpatterns = [
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("", views.home),
]
