"""Pages of channels, notification preferences and the creator dashboard (included from config/urls.py)."""

from django.urls import path

from streaming import pages

urlpatterns = [
    path("c/<slug:slug>/", pages.channel_page, name="stream-channel"),
    path("c/<slug:slug>/follow/", pages.channel_follow, name="stream-channel-follow"),
    path("account/notifications/", pages.notification_preferences, name="stream-notification-preferences"),
    path("streams/<int:stream_id>/dashboard/", pages.dashboard_page, name="stream-dashboard"),
]
