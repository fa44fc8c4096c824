"""Moderation pages: the review queue, pattern lists, policies, appeals, the audit export; DMCA under /dmca/."""

from django.urls import include, path

from moderation.manage_urls import notice_urlpatterns

app_name = "moderation"

urlpatterns = [
    path("dmca/", include("moderation.dmca_urls")),
    path("moderation/manage/", include("moderation.manage_urls")),
    path("moderation/notices/", include(notice_urlpatterns)),
    path("moderation/", include("moderation.queue_urls")),
]
