from django.urls import path

from streaming import views

urlpatterns = [
    path("streams/<int:stream_id>/", views.watch, name="stream-watch"),
    path("streams/<int:stream_id>/chat/", views.watch_chat, name="stream-chat"),
    path("streams/<int:stream_id>/embed/", views.watch_embed, name="stream-embed"),
]
