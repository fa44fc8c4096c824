from django.urls import path

from exams.api import views

urlpatterns = [
    path("attempts/<int:attempt_id>/", views.AttemptClock.as_view(), name="api-attempt"),
    path("attempts/<int:attempt_id>/answers/", views.AttemptAnswer.as_view(), name="api-attempt-answer"),
    path("attempts/<int:attempt_id>/submit/", views.AttemptSubmit.as_view(), name="api-attempt-submit"),
    path("attempts/<int:attempt_id>/events/", views.AttemptEvent.as_view(), name="api-attempt-event"),
]
