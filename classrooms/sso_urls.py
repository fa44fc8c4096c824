"""Single sign-on routes, included under /sso/ (config/urls.py)."""

from django.urls import path

from classrooms import sso_views

app_name = "sso"

urlpatterns = [
    path("", sso_views.start, name="start"),
    path("saml/complete/", sso_views.saml_complete, name="saml_complete"),
    path("<slug:district>/<slug:provider>/", sso_views.begin, name="begin"),
    path("<slug:district>/<slug:provider>/oidc/callback/", sso_views.oidc_callback, name="oidc_callback"),
    path("<slug:district>/<slug:provider>/saml/acs/", sso_views.saml_acs, name="saml_acs"),
    path("<slug:district>/<slug:provider>/saml/metadata/", sso_views.saml_metadata, name="saml_metadata"),
]
