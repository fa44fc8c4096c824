from django.urls import path

from analytics.api import views

urlpatterns = [
    path("analytics/streams/<int:object_id>/", views.StreamSlice.as_view(), name="api-analytics-stream"),
    path("analytics/sessions/<int:object_id>/", views.SessionSlice.as_view(), name="api-analytics-session"),
    path("analytics/pipeline/", views.PipelineStatus.as_view(), name="api-analytics-pipeline"),
]
