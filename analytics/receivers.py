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

from django.db.models.signals import post_save
from django.dispatch import receiver

from analytics import buffer, sentiment, webhooks
from classrooms.models import AttendanceInterval, ChatMessage, Enrollment, LiveSession, Membership, Role

logger = logging.getLogger("aula.analytics.receivers")


@functools.lru_cache(maxsize=4096)
def _session_course(session_id: int) -> tuple[int, int, str]:
    """(institution id, course id, title) of a live session (they never change)."""
    row = LiveSession.objects.filter(pk=session_id).values_list("institution_id", "course_id", "title").first()
    return row or (0, 0, "")


def class_dims(session_id: int, user_id: int) -> dict:
    institution_id, course_id, _ = _session_course(session_id)
    role = (Enrollment.objects.filter(user_id=user_id, course_id=course_id, is_active=True)
            .order_by("id").values_list("role", flat=True).first()) or ""
    grade = ""
    if role == Role.STUDENT:
        grade = (Membership.objects.filter(user_id=user_id, institution_id=institution_id, role=Role.STUDENT,
                                           is_active=True).values_list("grade_level", flat=True).first()) or ""
    return {"school": institution_id, "course": course_id, "segment": role, "grade": grade}


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


def poll_answered(sender, answer, **_):
    """For a `poll_answered` domain signal (kwargs: answer, a PollAnswer) once classrooms sends one."""
    try:
        session_id = answer.poll.session_id
        user_id = answer.user_id
        dims = class_dims(session_id, user_id) if user_id else {
            "school": answer.institution_id, "course": _session_course(session_id)[1]}
        buffer.record("poll.answer", scope="session", scope_id=session_id, at=answer.created_at.timestamp(), **dims)
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


def _connect_optional_signals() -> None:
    try:
        from classrooms import signals as classroom_signals
    except ImportError:
        return
    signal = getattr(classroom_signals, "poll_answered", None)
    if signal is not None:
        signal.connect(poll_answered, dispatch_uid="analytics.poll_answered")


_connect_optional_signals()


def attempt_saved(sender, instance, created: bool, update_fields=None, **_):
    """A student's own submission of an exam attempt (deadline closes are bulk updates: not reported)."""
    if created or instance.state != "submitted" or (update_fields is not None and "state" not in update_fields):
        return
    try:
        webhooks.outbox_write(
            institution_id=instance.institution_id, event_type="exam.submitted",
            build=lambda event_id: webhooks.caliper_event(
                type_="AssessmentEvent", action="Submitted", actor=webhooks.person(instance.student_id),
                object_={"id": f"urn:aula:exam:{instance.exam_id}", "type": "Assessment"},
                event_time=instance.finished_at or instance.finalized_at, event_id=event_id,
                extra={"edApp": _edapp(), "generated": {"id": f"urn:aula:attempt:{instance.pk}",
                                                        "type": "Attempt", "count": instance.number}}))
    except Exception:
        logger.exception("analytics: exam submission not recorded")


post_save.connect(attempt_saved, sender="exams.Attempt", dispatch_uid="analytics.attempt_saved")
