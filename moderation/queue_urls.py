"""The review queue's pages and actions, included at /moderation/ by moderation/urls.py (namespace
"moderation"); its socket is /ws/moderation/queue/ (config/routing.py)."""

from django.urls import path

from moderation import views

urlpatterns = [
    path("queue/", views.queue, name="queue"),
    path("queue/items/<int:item_id>/", views.queue_item, name="queue-item"),
    path("queue/items/<int:item_id>/claim/", views.queue_claim, name="queue-claim"),
    path("queue/items/<int:item_id>/release/", views.queue_release, name="queue-release"),
    path("queue/items/<int:item_id>/decide/", views.queue_decide, name="queue-decide"),
    path("queue/items/<int:item_id>/escalate/", views.queue_escalate, name="queue-escalate"),
    path("queue/items/<int:item_id>/assign/", views.queue_assign, name="queue-assign"),
]
