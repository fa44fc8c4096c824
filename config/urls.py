"""URL wiring: pages, admin, the REST API under /api/v1/, OAuth2 token endpoint and health probes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from analytics.metrics import metrics_view
from classrooms.auth import ThrottledAdminAuthenticationForm, ThrottledLoginView
from compliance.oauth import ThrottledTokenView
from config import health
from config.api import json_error

admin.site.site_header = "Aula administration"
admin.site.site_title = "Aula admin"
admin.site.index_title = "School administration"
admin.site.login_form = ThrottledAdminAuthenticationForm  # the same sign-in limits as the site's own form


@csrf_exempt  # any method gets the JSON 404 (a CSRF failure page would be HTML)
def api_not_found(request, *args, **kwargs):
    return json_error("not_found", "No such API endpoint.", 404)


urlpatterns = [
    path("healthz/", health.liveness, name="healthz"),
    path("readyz/", health.readiness, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; token or staff only (docs/observability.md)
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("sso/", include("classrooms.sso_urls")),  # single sign-on (docs/sso.md)
    # Only the token endpoint of django-oauth-toolkit: district clients use client credentials.
    path("o/token/", ThrottledTokenView.as_view(), name="oauth2_token"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the page runs under the site's CSP (no inline script).
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("compliance.api.urls")),
    path("api/v1/", include("exams.api.urls")),
    path("", include("analytics.urls")),  # the analytics API (/api/v1/analytics/...) and pages
    re_path(r"^api/", api_not_found),
    path("guardian/", include("compliance.coppa.urls")),
    path("lti/", include("classrooms.lti_urls")),
    path("", include("moderation.urls")),
    path("", include("streaming.page_urls")),
    path("", include("exams.urls")),
    path("", include("classrooms.urls")),
    path("", include("streaming.urls")),
]
