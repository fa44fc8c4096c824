from django.urls import include, path

from analytics import views

urlpatterns = [
    path("api/v1/", include("analytics.api.urls")),
    path("analytics/streams/<int:stream_id>/", views.stream_analytics, name="analytics-stream"),
    path("analytics/streams/<int:stream_id>/export.csv", views.stream_analytics_csv, name="analytics-stream-csv"),
    path("analytics/sessions/<int:session_id>/", views.session_analytics, name="analytics-session"),
    path("analytics/sessions/<int:session_id>/export.csv", views.session_analytics_csv,
         name="analytics-session-csv"),
]
