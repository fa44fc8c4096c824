"""LTI 1.3 endpoints (included under /lti/ by config/urls.py; docs/lti.md)."""

from django.urls import path

from classrooms import lti_views

urlpatterns = [
    path("jwks.json", lti_views.jwks, name="lti-jwks"),
    path("config.json", lti_views.tool_configuration, name="lti-config"),
    path("register/<str:token>/", lti_views.dynamic_registration, name="lti-register"),
    path("login/", lti_views.login_initiation, name="lti-login"),
    path("launch/", lti_views.launch, name="lti-launch"),
    path("continue/<str:token>/", lti_views.handoff, name="lti-continue"),
    path("deep-link/", lti_views.deep_link, name="lti-deep-link"),
    path("contexts/<int:context_id>/", lti_views.context_link, name="lti-context-link"),
]
