"""WebSocket routes. Every room route's consumer derives from config.realtime.consumer.RoomConsumer."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from classrooms.consumers import CollabConsumer, LiveSessionConsumer
from config.realtime.protocol import CloseCode
from exams.consumers import AttemptConsumer, ProctorConsumer
from moderation.consumers import QueueConsumer
from streaming.consumers import StreamConsumer
from streaming.dashboard import DashboardConsumer
from streaming.notifications import NotificationConsumer


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Refuses sockets to paths that are not routes (instead of an unhandled routing error)."""

    channel_layer_alias = "__no_layer__"

    async def connect(self):
        await self.accept()  # accepted first so the client receives the code (see RoomConsumer._refuse)
        await self.close(code=CloseCode.NOT_FOUND)


websocket_urlpatterns = [
    path("ws/v1/sessions/<int:session_id>/", LiveSessionConsumer.as_asgi()),
    path("ws/v1/sessions/<int:session_id>/collab/", CollabConsumer.as_asgi()),
    path("ws/v1/attempts/<int:attempt_id>/", AttemptConsumer.as_asgi()),
    path("ws/v1/exams/<int:exam_id>/proctor/", ProctorConsumer.as_asgi()),
    path("ws/v1/streams/<int:stream_id>/", StreamConsumer.as_asgi()),
    path("ws/v1/notifications/", NotificationConsumer.as_asgi()),
    path("ws/v1/streams/<int:stream_id>/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/moderation/queue/", QueueConsumer.as_asgi()),
    re_path(r"", UnknownRouteConsumer.as_asgi()),
]
