"""Analytics observes the live-class domain through its signals: attendance intervals, chat, submissions.

Classrooms and exams never import analytics (docs/analytics.md): these receivers turn their committed changes
into buffered analytics events (`buffer.record`, no I/O) and, for learning events an integration subscribed
to, outbox rows written in the same transaction as the change (analytics.webhooks).

Class events carry the dimensions school, course, segment (the person's course role) and grade (the
student's grade level); never a geography finer than the country, and here none at all (no address is known).
"""

from __future__ import annotations

import functools
import logging
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from analytics import buffer, sentiment, webhooks
from classrooms.models import AttendanceInterval, ChatMessage, Enrollment, LiveSession, Membership, Role
from classrooms.signals import poll_answered as poll_answered_signal
from exams import signals as exam_signals

logger = logging.getLogger("aula.analytics.receivers")


@functools.lru_cache(maxsize=4096)
def _session_course(session_id: int) -> tuple[int, int, str]:
    """(institution id, course id, title) of a live session (they never change)."""
    row = LiveSession.objects.filter(pk=session_id).values_list("institution_id", "course_id", "title").first()
    return row or (0, 0, "")


def class_dims(session_id: int, user_id: int) -> dict:
    """school, course, segment (course role) and grade of a person in a live session. Cached per process
    for a few minutes (a chat burst must not cost two queries a message inside its transaction): a role or
    grade change shows in the analytics within AULA_ANALYTICS_DIMS_CACHE_SECONDS."""
    period = max(settings.AULA_ANALYTICS_DIMS_CACHE_SECONDS, 1)
    return dict(_class_dims(session_id, user_id, int(time.time() // period)))


@functools.lru_cache(maxsize=8192)
def _class_dims(session_id: int, user_id: int, _period: int) -> tuple:
    institution_id, course_id, _ = _session_course(session_id)
    role = (Enrollment.objects.filter(user_id=user_id, course_id=course_id, is_active=True)
            .order_by("id").values_list("role", flat=True).first()) or ""
    grade = ""
    if role == Role.STUDENT:
        grade = (Membership.objects.filter(user_id=user_id, institution_id=institution_id, role=Role.STUDENT,
                                           is_active=True).values_list("grade_level", flat=True).first()) or ""
    return tuple({"school": institution_id, "course": course_id, "segment": role, "grade": grade}.items())


def _edapp() -> dict:
    return {"id": "urn:aula", "type": "SoftwareApplication"}


def _session_object(session_id: int) -> dict:
    _, course_id, title = _session_course(session_id)
    return {"id": f"urn:aula:live-session:{session_id}", "type": "DigitalResource", "name": title,
            "isPartOf": {"id": f"urn:aula:course:{course_id}", "type": "CourseSection"}}


@receiver(post_save, sender=AttendanceInterval, dispatch_uid="analytics.attendance_interval")
def attendance_interval_saved(sender, instance: AttendanceInterval, created: bool, **_):
    """One connection's stay in a class: a join at its start and a leave at its end (recorded when it ends,
    so a join is counted into its bucket late: up to the length of the stay)."""
    if not created:
        return
    try:
        dims = class_dims(instance.session_id, instance.user_id)
        joined, left = instance.joined_at.timestamp(), instance.left_at.timestamp()
        buffer.record("viewer.join", scope="session", scope_id=instance.session_id, at=joined, **dims)
        buffer.record("viewer.leave", scope="session", scope_id=instance.session_id, at=left, **dims)
        for event_type, action, when in (("session.joined", "Started", instance.joined_at),
                                         ("session.left", "Ended", instance.left_at)):
            webhooks.outbox_write(
                institution_id=instance.institution_id, event_type=event_type,
                build=lambda event_id, action=action, when=when: webhooks.caliper_event(
                    type_="Event", action=action, actor=webhooks.person(instance.user_id),
                    object_=_session_object(instance.session_id), event_time=when, event_id=event_id,
                    extra={"edApp": _edapp(), "group": {"id": f"urn:aula:course:{dims['course']}",
                                                        "type": "CourseSection"}}))
    except Exception:  # observing must never break the class
        logger.exception("analytics: attendance interval not recorded")


@receiver(post_save, sender=ChatMessage, dispatch_uid="analytics.chat_message")
def chat_message_saved(sender, instance: ChatMessage, created: bool, **_):
    if not created:
        return
    try:
        buffer.record("chat.message", scope="session", scope_id=instance.session_id,
                      value=sentiment.score(instance.body), at=instance.created_at.timestamp(),
                      **class_dims(instance.session_id, instance.author_id))
    except Exception:
        logger.exception("analytics: chat message not recorded")


@receiver(poll_answered_signal, dispatch_uid="analytics.poll_answered")
def poll_answered(sender, answer, session_id: int, dims: dict, **_):
    """A stored class poll answer: counted per window with the dimensions the answer's context read (no
    query here), and a Caliper event for a subscribed integration. The outbox row is written right after
    the answer's own commit (the answer is one autocommit statement): a crash between the two loses that
    event, never the answer."""
    try:
        buffer.record("poll.answer", scope="session", scope_id=session_id, at=answer.created_at.timestamp(),
                      **{k: v for k, v in dims.items() if v not in ("", None)})
        user_id = answer.user_id
        if user_id:
            webhooks.outbox_write(
                institution_id=answer.institution_id, event_type="poll.answered",
                build=lambda event_id: webhooks.caliper_event(
                    type_="AssessmentItemEvent", action="Completed", actor=webhooks.person(user_id),
                    object_={"id": f"urn:aula:poll:{answer.poll_id}", "type": "AssessmentItem",
                             "isPartOf": _session_object(session_id)},
                    event_time=answer.created_at, event_id=event_id, extra={"edApp": _edapp()}))
    except Exception:
        logger.exception("analytics: poll answer not recorded")


def _submitted_event(attempt) -> None:
    webhooks.outbox_write(
        institution_id=attempt.institution_id, event_type="exam.submitted",
        build=lambda event_id: webhooks.caliper_event(
            type_="AssessmentEvent", action="Submitted", actor=webhooks.person(attempt.student_id),
            object_={"id": f"urn:aula:exam:{attempt.exam_id}", "type": "Assessment"},
            event_time=attempt.finished_at or attempt.finalized_at, event_id=event_id,
            extra={"edApp": _edapp(), "generated": {"id": f"urn:aula:attempt:{attempt.pk}", "type": "Attempt",
                                                    "count": attempt.number,
                                                    "extensions": {"finishReason": attempt.finish_reason}}}))


def attempt_saved(sender, instance, created: bool, update_fields=None, **_):
    """A submission saved one by one: the student's own, or a deadline close on touch."""
    if created or instance.state != "submitted" or (update_fields is not None and "state" not in update_fields):
        return
    try:
        _submitted_event(instance)
    except Exception:
        logger.exception("analytics: exam submission not recorded")


def attempts_submitted(sender, attempts, **_):
    """A deadline wave closed these attempts together (exams.signals.attempts_submitted)."""
    for attempt in attempts:
        try:
            _submitted_event(attempt)
        except Exception:
            logger.exception("analytics: exam submission not recorded")


post_save.connect(attempt_saved, sender="exams.Attempt", dispatch_uid="analytics.attempt_saved")
exam_signals.attempts_submitted.connect(attempts_submitted, dispatch_uid="analytics.attempts_submitted")
post_save.connect(webhooks.endpoints_clear, sender="analytics.WebhookEndpoint", dispatch_uid="analytics.endpoints")
post_delete.connect(webhooks.endpoints_clear, sender="analytics.WebhookEndpoint",
                    dispatch_uid="analytics.endpoints_deleted")
