"""Moderation pages: the review queue, pattern lists, policies, appeals, the audit export; DMCA under /dmca/."""

from django.urls import include, path

app_name = "moderation"

urlpatterns = [
    path("dmca/", include("moderation.dmca_urls")),
    path("moderation/", include("moderation.queue_urls")),
]
