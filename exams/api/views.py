"""HTTP fallback for the attempt socket (same services): read the clock, save an answer, submit.

Session-authenticated (the student's browser, with CSRF); another student's or school's attempt is 404.
"""

from __future__ import annotations

import logging

from auditlog.context import set_actor
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from exams import events, selectors, services

logger = logging.getLogger("aula.exams")


class AnswerIn(serializers.Serializer):
    question_id = serializers.IntegerField()
    value = serializers.JSONField(allow_null=True)
    version = serializers.IntegerField(min_value=1)
    client_time = serializers.DateTimeField(required=False, allow_null=True)


class SubmitIn(serializers.Serializer):
    client_time = serializers.DateTimeField(required=False, allow_null=True)


class AttemptView(APIView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [permissions.IsAuthenticated]

    def attempt(self, request, attempt_id: int):
        attempt = selectors.own_attempt(request.user, attempt_id)
        if attempt is None:
            logger.warning("attempt request refused: not the user's attempt user=%s", request.user.pk)
            raise NotFound()
        return attempt


class AttemptClock(AttemptView):
    @extend_schema(tags=["exams"], responses={200: dict})
    def get(self, request, attempt_id: int):
        attempt = services.attempt_touch(self.attempt(request, attempt_id))  # finalisation on touch
        return Response({"server_time": timezone.now().isoformat(), **events.attempt_status(attempt)})


class EventIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["viewed", "flagged", "unflagged", "focus_lost", "focus_regained"])
    question_id = serializers.IntegerField(required=False, allow_null=True)
    duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=86_400_000)
    client_time = serializers.DateTimeField(required=False, allow_null=True)


class AttemptEvent(AttemptView):
    """HTTP fallback of `attempt.event` (focus, flags, views) while the socket is down."""

    @extend_schema(tags=["exams"], request=EventIn, responses={200: dict})
    def post(self, request, attempt_id: int):
        attempt = self.attempt(request, attempt_id)
        data = EventIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        payload = {k: val for k, val in {"question": v.get("question_id"), "duration_ms": v.get("duration_ms")}.items()
                   if val is not None}
        with set_actor(request.user):
            event = services.attempt_event(attempt_id=attempt.pk, student=request.user, kind=v["kind"],
                                           data=payload, client_time=v.get("client_time"))
        return Response({"recorded": event is not None})


class AttemptAnswer(AttemptView):
    @extend_schema(tags=["exams"], request=AnswerIn, responses={200: dict})
    def post(self, request, attempt_id: int):
        attempt = self.attempt(request, attempt_id)
        data = AnswerIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            with set_actor(request.user):
                answer, applied = services.answer_save(
                    attempt_id=attempt.pk, student=request.user, question_id=data.validated_data["question_id"],
                    value=data.validated_data["value"], version=data.validated_data["version"],
                    client_time=data.validated_data.get("client_time"))
        except services.AttemptClosed as exc:
            return Response({"error": {"code": "attempt_closed", "message": str(exc), "details": {},
                                       "request_id": getattr(request._request, "request_id", "-")}},
                            status=status.HTTP_409_CONFLICT)
        return Response({"question_id": answer.question_id, "version": answer.version, "applied": applied,
                         "saved_at": answer.saved_at.isoformat()})


class AttemptSubmit(AttemptView):
    @extend_schema(tags=["exams"], request=SubmitIn, responses={200: dict})
    def post(self, request, attempt_id: int):
        attempt = self.attempt(request, attempt_id)
        data = SubmitIn(data=request.data)
        data.is_valid(raise_exception=True)
        with set_actor(request.user):
            attempt = services.attempt_submit(attempt_id=attempt.pk, student=request.user,
                                              client_time=data.validated_data.get("client_time"))
        return Response(events.attempt_status(attempt))
