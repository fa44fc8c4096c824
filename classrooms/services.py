"""Every write to identity, tenancy, courses and enrollments: one function per change, atomic and audited.

Pages, API, admin, management commands and consumers call these; nothing else writes these models.
django-auditlog records each save (the actor comes from the request, socket or task context).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import uuid as uuid_module

from auditlog.models import LogEntry
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from classrooms import events, realtime, selectors, signals
from classrooms.models import (
    AttendanceInterval,
    ChatMessage,
    Course,
    District,
    DistrictRole,
    Enrollment,
    Feature,
    Guardianship,
    HandRaise,
    Institution,
    LiveSession,
    Membership,
    ParticipantState,
    Poll,
    PollAnswer,
    PollOption,
    Role,
    SessionControl,
    User,
)
from config.realtime.models import RoomEvent
from config.realtime.transport import (
    room_control_publish,
    room_direct_publish,
    room_event_emit,
    room_event_record,
    room_next_seq,
    room_signal_publish,
)


def upsert(model, *, defaults: dict, **lookup):
    """get-or-create, then save only the fields that differ: re-running a sync or seed writes nothing
    (and so audits nothing) when nothing changed."""
    obj, created = model.objects.get_or_create(**lookup, defaults=defaults)
    if not created:
        changed = [k for k, v in defaults.items() if getattr(obj, k) != v]
        if changed:
            for k in changed:
                setattr(obj, k, defaults[k])
            obj.save()
    return obj


def _check_staff(actor: User | None, institution_id: int) -> None:
    """School staff may only change their own institution; None is a system actor (seed, sync, task)."""
    if actor is not None and not selectors.is_school_staff(actor, institution_id):
        raise PermissionDenied("not staff of this institution")


def district_upsert(*, slug: str, name: str) -> District:
    return upsert(District, slug=slug, defaults={"name": name})


def institution_upsert(*, district: District, slug: str, name: str, timezone: str = "UTC") -> Institution:
    return upsert(Institution, slug=slug, defaults={"district": district, "name": name, "timezone": timezone})


def user_upsert(*, email: str, username: str | None = None, password: str | None = None,
                first_name: str = "", last_name: str = "", display_name: str = "",
                date_of_birth: dt.date | None = None, is_staff: bool = False) -> User:
    """Create or update a person by email. `password` is set only when the account is created."""
    email = User.objects.normalize_email(email).lower()
    with transaction.atomic():
        user = User.objects.select_for_update().filter(email__iexact=email).first()
        fields = {"first_name": first_name, "last_name": last_name,
                  "display_name": display_name or first_name, "date_of_birth": date_of_birth}
        if user is None:
            user = User(email=email, username=username or email, is_staff=is_staff, **fields)
            if password is not None:
                user.set_password(password)
            else:
                user.set_unusable_password()
        else:
            changed = {k: v for k, v in fields.items() if getattr(user, k) != v}
            if is_staff and not user.is_staff:
                changed["is_staff"] = True
            if not changed:
                return user
            for k, v in changed.items():
                setattr(user, k, v)
        user.full_clean(exclude=["password"])
        user.save()
    return user


def user_terminate(*, user_id: int) -> bool:
    """Close an account (a repeat infringer under the DMCA policy): it can no longer sign in, and its sockets
    close at their next re-check. Recorded by auditlog; the caller records why. False when already closed."""
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None or not user.is_active:
            return False
        user.is_active = False
        user.save(update_fields=["is_active", "updated_at"])
    return True


def membership_grant(*, user: User, institution: Institution, role: str, grade_level: str = "",
                     actor: User | None = None) -> Membership:
    _check_staff(actor, institution.pk)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            user=user, institution=institution, role=role,
            defaults={"grade_level": grade_level, "is_active": True},
        )
        if not created and (not membership.is_active or membership.grade_level != grade_level):
            membership.is_active, membership.grade_level = True, grade_level
            membership.save()
        if role == Role.STAFF and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    return membership


def membership_save(*, membership: Membership, actor: User | None = None) -> Membership:
    """Edit a membership (role, grade, active) from a form; staff only within their institution."""
    _check_staff(actor, membership.institution_id)
    if membership.pk:
        previous = Membership.objects.only("institution_id").get(pk=membership.pk)
        if previous.institution_id != membership.institution_id:
            raise ValidationError({"institution": "A membership cannot move to another institution."})
    with transaction.atomic():
        membership.full_clean()
        membership.save()
        if membership.role == Role.STAFF and membership.is_active and not membership.user.is_staff:
            membership.user.is_staff = True
            membership.user.save(update_fields=["is_staff"])
    return membership


def institution_save(*, institution: Institution, actor: User | None = None) -> Institution:
    if institution.pk:
        _check_staff(actor, institution.pk)
    elif actor is not None and not actor.is_superuser:
        raise PermissionDenied("Only platform administrators create institutions.")
    institution.full_clean()
    institution.save()
    return institution


def district_admin_grant(*, user: User, district: District) -> DistrictRole:
    role, _ = DistrictRole.objects.get_or_create(user=user, district=district)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return role


def guardianship_link(*, guardian: User, student: User, institution: Institution,
                      relationship: str = "parent", actor: User | None = None) -> Guardianship:
    _check_staff(actor, institution.pk)
    return upsert(Guardianship, guardian=guardian, student=student,
                  defaults={"institution": institution, "relationship": relationship})


def course_save(*, course: Course, actor: User | None = None) -> Course:
    """Create or update a course; staff may only place courses in their own institution."""
    _check_staff(actor, course.institution_id)
    if course.pk:
        previous = Course.objects.only("institution_id").get(pk=course.pk)
        if previous.institution_id != course.institution_id:
            raise ValidationError({"institution": "A course cannot move to another institution."})
    course.full_clean()
    course.save()
    return course


def course_upsert(*, institution: Institution, code: str, title: str, term: str = "") -> Course:
    return upsert(Course, institution=institution, code=code, term=term, defaults={"title": title})


def enrollment_upsert(*, course: Course, user: User, role: str, actor: User | None = None) -> Enrollment:
    """Enroll `user` in `course` with `role`, re-activating a dropped enrollment."""
    _check_staff(actor, course.institution_id)
    with transaction.atomic():
        enrollment = Enrollment.objects.select_for_update().filter(course=course, user=user).first()
        if enrollment is None:
            enrollment = Enrollment(course=course, user=user, institution_id=course.institution_id)
        elif enrollment.role == role and enrollment.is_active \
                and enrollment.institution_id == course.institution_id:
            return enrollment
        enrollment.role, enrollment.is_active = role, True
        enrollment.institution_id = course.institution_id
        enrollment.full_clean(validate_unique=False)
        enrollment.save()
    return enrollment


def enrollment_save(*, enrollment: Enrollment, actor: User | None = None) -> Enrollment:
    """Admin form path: the institution always follows the course, never the form."""
    _check_staff(actor, enrollment.course.institution_id)
    enrollment.institution_id = enrollment.course.institution_id
    enrollment.full_clean()
    enrollment.save()
    return enrollment


def enrollment_drop(*, enrollment: Enrollment, actor: User | None = None) -> Enrollment:
    _check_staff(actor, enrollment.institution_id)
    if enrollment.is_active:
        enrollment.is_active = False
        enrollment.save(update_fields=["is_active", "updated_at"])
    return enrollment


def live_session_save(*, session: LiveSession, actor: User | None = None) -> LiveSession:
    _check_staff(actor, session.course.institution_id)
    session.institution_id = session.course.institution_id
    if session.created_by_id is None and actor is not None:
        session.created_by = actor
    session.full_clean()
    session.save()
    return session


def live_session_upsert(*, course: Course, title: str, scheduled_start: dt.datetime | None = None,
                        created_by: User | None = None, video_url: str = "") -> LiveSession:
    return upsert(LiveSession, course=course, title=title,
                  defaults={"institution_id": course.institution_id, "scheduled_start": scheduled_start,
                            "created_by": created_by, "video_url": video_url})


# --- live sessions -----------------------------------------------------------------------------------
# Every function below is the one write path for its change: the page, the socket, the admin and tasks
# call it. Each takes the room's next seq inside its transaction and broadcasts after commit.

CHAT_MAX_CHARS = 2000
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Conflict(Exception):
    """The action contradicts what is already recorded (e.g. a different answer for the same poll)."""


def _room(session: LiveSession) -> str:
    return realtime.session_room(session.institution_id, session.pk)


def _require_moderator(actor: User, session: LiveSession) -> None:
    if not selectors.can_moderate(actor, session):
        raise PermissionDenied("Only the class's teachers can do that.")


def _require_feature(session: LiveSession, user: User, feature: str) -> None:
    reason = selectors.feature_block_reason(session, user, feature)
    if reason:
        raise PermissionDenied(reason)


def _audit(instance, actor: User | None, action: str, **details) -> None:
    """An explicit audit entry for moderation actions on rows that are not audited field by field."""
    LogEntry.objects.log_create(instance, force_log=True, action=LogEntry.Action.UPDATE, actor=actor,
                                changes={"action": [None, action], **{k: [None, str(v)] for k, v in details.items()}})


def _locked_session(session: LiveSession) -> LiveSession:
    return LiveSession.objects.select_for_update().get(pk=session.pk)


def session_start(*, session: LiveSession, actor: User) -> LiveSession:
    _require_moderator(actor, session)
    with transaction.atomic():
        session = _locked_session(session)
        if session.status == LiveSession.Status.ENDED:
            raise ValidationError("The session has ended.")
        if session.status != LiveSession.Status.LIVE:
            session.status, session.started_at = LiveSession.Status.LIVE, timezone.now()
            session.save(update_fields=["status", "started_at"])
            room_event_emit(_room(session), "session.status", events.session_status(session))
    return session


def session_end(*, session: LiveSession, actor: User | None) -> LiveSession:
    """End the session: everyone is disconnected (close 4409) and reconnects are refused."""
    if actor is not None:
        _require_moderator(actor, session)
    with transaction.atomic():
        session = _locked_session(session)
        if session.status == LiveSession.Status.ENDED:
            return session
        session.status, session.ended_at = LiveSession.Status.ENDED, timezone.now()
        session.save(update_fields=["status", "ended_at"])
        HandRaise.objects.filter(session=session, lowered_at__isnull=True).update(
            lowered_at=session.ended_at, lowered_reason=HandRaise.Lowered.LEFT)
        room_event_emit(_room(session), "session.status", events.session_status(session))
        room_control_publish(_room(session), "end")
        room_control_publish(realtime.session_collab_room(session.institution_id, session.pk), "end")
        from classrooms.tasks import attendance_compute, collab_session_compact

        # After commit, and after presence has swept the last ghosts (TTL 25 s) into intervals.
        session_id = session.pk
        transaction.on_commit(lambda: attendance_compute.apply_async(args=[session_id], countdown=40))
        # The board and notes are folded into their final checkpoints once the last flushes are stored.
        transaction.on_commit(lambda: collab_session_compact.apply_async(args=[session_id], countdown=5))
        transaction.on_commit(lambda: signals.session_ended.send(sender=LiveSession, session_id=session_id))
    return session


def _screen_context(session: LiveSession, author: User, source: str):
    from moderation.pipeline import Context

    # Aula's schools are K-12: a live class is a class of minors, first in the review queue.
    return Context(source=source, institution_id=session.institution_id, course_id=session.course_id,
                   room_id=session.pk, author_id=author.pk, minors=session.status == LiveSession.Status.LIVE)


def _require_unsanctioned(session: LiveSession, author: User) -> None:
    """A moderation timeout or ban (this class, or the whole school) stops what a student writes; it does
    not stop them attending (removal from a session is the teacher's separate, explicit action)."""
    from moderation.selectors import active_sanctions

    sanction = active_sanctions(author.pk, institution_id=session.institution_id,
                                course_id=session.course_id).order_by("-expires_at").first()
    if sanction is not None:
        until = f" until {timezone.localtime(sanction.expires_at):%H:%M %Z}" if sanction.expires_at else ""
        raise PermissionDenied(f"A moderator has restricted your posting{until}.")


def _screen(session: LiveSession, author: User, source: str, text: str):
    """The moderation pipeline's verdict (a block is audited and refused here, nothing stored)."""
    from moderation import pipeline
    from moderation.services import block_record

    ctx = _screen_context(session, author, source)
    verdict = pipeline.screen(text, ctx)
    if verdict.action == "block":
        block_record(verdict=verdict, ctx=ctx, author_id=author.pk)
        raise ValidationError(verdict.public_reason())
    return ctx, verdict


DISPLAY_NAME_MAX = 80


def display_name_set(*, user: User, name: str) -> User:
    """A person chooses the name others see. It passes moderation like any text others will see (screened
    with the lists of their first school, or the platform's): a name the pipeline would hold or block is
    refused (a name cannot wait in a queue while it is shown), a flagged one is kept and queued."""
    from moderation import pipeline
    from moderation.models import Source
    from moderation.services import block_record, verdict_record

    name = " ".join(_CONTROL_CHARS.sub("", name or "").split())
    if len(name) > DISPLAY_NAME_MAX:
        raise ValidationError(f"A name is at most {DISPLAY_NAME_MAX} characters.")
    if not name:
        raise ValidationError("Enter a name, or keep the one you have.")
    ids = selectors.institution_ids_for(user)
    institution_id = min(ids) if ids else None
    ctx = pipeline.Context(source=Source.DISPLAY_NAME, institution_id=institution_id, author_id=user.pk)
    verdict = pipeline.screen(name, ctx)
    if not verdict.visible or verdict.action == "censor":
        block_record(verdict=verdict, ctx=ctx, author_id=user.pk)
        raise ValidationError("This name is not allowed here. Please choose another.")
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        user.display_name = name
        user.save(update_fields=["display_name", "updated_at"])
        verdict_record(verdict=verdict, ctx=ctx, object_id=user.pk, author_id=user.pk, text=name)
    return user


def display_name_moderated(*, user_id: int, name: str) -> None:
    """A moderator's decision on a display name: "" resets it (the first name or username shows instead)."""
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is not None:
            user.display_name = name[:DISPLAY_NAME_MAX]
            user.save(update_fields=["display_name", "updated_at"])


def chat_message_post(*, session: LiveSession, author: User, body: str, client_ref: str = "") -> ChatMessage:
    """Store a chat message screened by moderation: shown to the class with the next seq, or held (stored
    without a seq, shown to its author as pending review) until a moderator approves it. Idempotent by ref."""
    from moderation.models import Source
    from moderation.services import verdict_record

    body = _CONTROL_CHARS.sub("", body or "").strip()
    if not body:
        raise ValidationError("A message cannot be empty.")
    if len(body) > CHAT_MAX_CHARS:
        raise ValidationError(f"A message is at most {CHAT_MAX_CHARS} characters.")
    _require_feature(session, author, Feature.CHAT)
    if client_ref:
        existing = ChatMessage.objects.filter(session=session, author=author, client_ref=client_ref).first()
        if existing is not None:
            return existing  # a retried send: acknowledged again, stored and broadcast once
    _require_unsanctioned(session, author)
    ctx, verdict = _screen(session, author, Source.CLASS_CHAT, body)
    try:
        with transaction.atomic():
            message = ChatMessage(institution_id=session.institution_id, session=session, author=author,
                                  body=verdict.text, client_ref=client_ref)
            if verdict.visible:
                message.seq = room_next_seq(_room(session))
                message.save(force_insert=True)
                room_event_record(_room(session), message.seq, "chat.message", events.chat_message(message))
            else:
                message.status = ChatMessage.Status.HELD
                message.save(force_insert=True)
                room_direct_publish(_room(session), author.pk, "chat.held", events.chat_held(message))
            item = verdict_record(verdict=verdict, ctx=ctx, object_id=message.pk, author_id=author.pk, text=body)
            if item is not None:
                room_signal_publish(realtime.session_staff_room(session.institution_id, session.pk),
                                    "moderation.item", events.moderation_item(item, notify=verdict.notify))
    except IntegrityError:
        # The same ref sent twice at once: the other one won; answer with it.
        return ChatMessage.objects.get(session=session, author=author, client_ref=client_ref)
    return message


# --- moderation decisions on class content (called through classrooms/screening.py) ---------------------

def chat_message_release(*, message_id: int, body: str | None = None) -> ChatMessage | None:
    """A held or removed message goes out to the class (with a new seq), as sent or as `body` (masked)."""
    with transaction.atomic():
        message = ChatMessage.objects.select_for_update().select_related("session", "author").filter(
            pk=message_id).first()
        if message is None:
            return None
        session = message.session
        if body is None and (message.status != ChatMessage.Status.HELD or message.deleted_at is not None):
            return message  # an approval releases a held message only, never one a teacher deleted
        if body is not None:
            message.body = body
        shown = message.status == ChatMessage.Status.VISIBLE and message.deleted_at is None
        if shown:  # masking a visible message: it leaves the screen and comes back masked
            _scrub_chat_events(session, [message.pk])
            room_event_emit(_room(session), "chat.deleted", events.chat_deleted(message))
        message.status, message.deleted_at, message.deleted_by, message.delete_reason = \
            ChatMessage.Status.VISIBLE, None, None, ""
        message.seq = room_next_seq(_room(session))
        message.save(update_fields=["status", "deleted_at", "deleted_by", "delete_reason", "seq", "body"])
        room_event_record(_room(session), message.seq, "chat.message", events.chat_message(message))
    return message


def chat_message_withdraw(*, message_id: int, actor: User | None, reason: str) -> ChatMessage | None:
    """A moderator's removal: a visible message is deleted for everyone, a held one is rejected."""
    with transaction.atomic():
        message = ChatMessage.objects.select_for_update().select_related("session").filter(pk=message_id).first()
        if message is None:
            return None
        if message.status == ChatMessage.Status.HELD:
            message.status = ChatMessage.Status.REJECTED
            message.save(update_fields=["status"])
        elif message.status == ChatMessage.Status.VISIBLE and message.deleted_at is None:
            message.deleted_at, message.deleted_by, message.delete_reason = timezone.now(), actor, reason[:200]
            message.save(update_fields=["deleted_at", "deleted_by", "delete_reason"])
            _scrub_chat_events(message.session, [message.pk])
            room_event_emit(_room(message.session), "chat.deleted", events.chat_deleted(message))
    return message


def _scrub_chat_events(session: LiveSession, message_ids: list[int] | None) -> None:
    """Deleted text must not come back in a resume replay: blank it in the room's event log too."""
    events_qs = RoomEvent.objects.filter(room_key=_room(session), type="chat.message")
    if message_ids is not None:
        events_qs = events_qs.filter(payload__id__in=message_ids)
    for event in events_qs.only("id", "payload"):
        event.payload = {**event.payload, "body": "", "deleted": True}
        event.save(update_fields=["payload"])


def chat_message_delete(*, message: ChatMessage, actor: User, reason: str) -> ChatMessage:
    session = message.session
    _require_moderator(actor, session)
    if not reason.strip():
        raise ValidationError("Give a reason for deleting a message.")
    with transaction.atomic():
        message = ChatMessage.objects.select_for_update().get(pk=message.pk)
        if message.deleted_at is not None:
            return message
        message.deleted_at, message.deleted_by, message.delete_reason = timezone.now(), actor, reason.strip()[:200]
        message.save(update_fields=["deleted_at", "deleted_by", "delete_reason"])
        _scrub_chat_events(session, [message.pk])
        _audit(message, actor, "chat.delete", reason=message.delete_reason, author=message.author_id)
        room_event_emit(_room(session), "chat.deleted", events.chat_deleted(message))
    return message


def chat_clear(*, session: LiveSession, actor: User, reason: str) -> int:
    _require_moderator(actor, session)
    if not reason.strip():
        raise ValidationError("Give a reason for clearing the chat.")
    with transaction.atomic():
        _locked_session(session)
        now = timezone.now()
        ids = list(ChatMessage.objects.filter(session=session, deleted_at__isnull=True).values_list("id", flat=True))
        # One audit entry for the clear, listing every message it removed (not a silent bulk update).
        ChatMessage.objects.filter(id__in=ids).update(deleted_at=now, deleted_by=actor, delete_reason=reason[:200])
        _scrub_chat_events(session, ids)
        _audit(session, actor, "chat.clear", reason=reason[:200], messages=ids)
        seq = room_next_seq(_room(session))
        room_event_record(_room(session), seq, "chat.cleared",
                          events.chat_cleared(by=actor, up_to_seq=seq))
    return len(ids)


def _participant_notice(session: LiveSession, user_id: int, type_: str, data: dict) -> None:
    """Per-student moderation (muted, locked, removed, screen share) is not the class's business: it goes
    to the teachers and to that student only. The state itself is stored (ParticipantState, audited) and
    is part of every snapshot and resume, so a reconnecting student still gets it."""
    room_signal_publish(realtime.session_staff_room(session.institution_id, session.pk), type_, data)
    room_direct_publish(_room(session), user_id, type_, data)


def _participant(session: LiveSession, user: User) -> ParticipantState:
    state, _ = ParticipantState.objects.select_for_update().get_or_create(
        session=session, user=user, defaults={"institution_id": session.institution_id})
    return state


def _require_student_of(session: LiveSession, user: User) -> None:
    if selectors.enrollment_role(user, session.course) is None:
        raise ValidationError("That person is not in this class.")


def feature_lock(*, session: LiveSession, actor: User, feature: str, locked: bool,
                 user: User | None = None) -> None:
    """Lock or unlock a feature for the whole class, or for one student (`user`)."""
    _require_moderator(actor, session)
    if feature not in Feature.values:
        raise ValidationError(f"Unknown feature {feature!r}.")
    with transaction.atomic():
        if user is None:
            control, _ = SessionControl.objects.select_for_update().get_or_create(
                session=session, defaults={"institution_id": session.institution_id})
            features = set(control.locked_features)
            features.add(feature) if locked else features.discard(feature)
            control.locked_features = sorted(features)
            control.save(update_fields=["locked_features", "updated_at"])
            room_event_emit(_room(session), "controls.updated", events.controls(control))
        else:
            _require_student_of(session, user)
            state = _participant(session, user)
            features = set(state.locked_features)
            features.add(feature) if locked else features.discard(feature)
            state.locked_features = sorted(features)
            state.save(update_fields=["locked_features", "updated_at"])
            _participant_notice(session, user.pk, "participant.updated", events.participant(state))
        # The board and notes sockets check edit permission on every update from a cache; this refreshes it.
        room_control_publish(realtime.session_collab_room(session.institution_id, session.pk), "locks")


def screen_share_set(*, session: LiveSession, actor: User, user: User, allowed: bool) -> ParticipantState:
    """Grant or revoke screen sharing without handing over the teacher role."""
    _require_moderator(actor, session)
    _require_student_of(session, user)
    with transaction.atomic():
        state = _participant(session, user)
        if state.can_screen_share != allowed:
            state.can_screen_share = allowed
            state.save(update_fields=["can_screen_share", "updated_at"])
            _participant_notice(session, user.pk, "participant.updated", events.participant(state))
    return state


def participant_remove(*, session: LiveSession, actor: User, user: User, reason: str = "") -> ParticipantState:
    """Remove a student; their sockets close (4408) and they cannot rejoin this session."""
    _require_moderator(actor, session)
    _require_student_of(session, user)
    if selectors.can_moderate(user, session):
        raise ValidationError("A teacher cannot be removed from their own class.")
    with transaction.atomic():
        state = _participant(session, user)
        if state.removed_at is None:
            state.removed_at, state.removed_by, state.removed_reason = timezone.now(), actor, reason[:200]
            state.save(update_fields=["removed_at", "removed_by", "removed_reason", "updated_at"])
            for hand in HandRaise.objects.filter(session=session, user=user, lowered_at__isnull=True):
                _hand_lower(hand, actor, HandRaise.Lowered.TEACHER)
            _participant_notice(session, user.pk, "participant.removed", {"user_id": user.pk})
            room_control_publish(_room(session), "remove", user_id=user.pk)
            room_control_publish(realtime.session_collab_room(session.institution_id, session.pk), "remove",
                                 user_id=user.pk)
    return state


def participant_readmit(*, session: LiveSession, actor: User, user: User) -> ParticipantState:
    _require_moderator(actor, session)
    with transaction.atomic():
        state = _participant(session, user)
        if state.removed_at is not None:
            state.removed_at, state.removed_by, state.removed_reason = None, None, ""
            state.save(update_fields=["removed_at", "removed_by", "removed_reason", "updated_at"])
            _participant_notice(session, user.pk, "participant.updated", events.participant(state))
    return state


def timer_start(*, session: LiveSession, actor: User, seconds: int, label: str = "") -> SessionControl:
    """A class timer driven by server time: clients count down to `ends_at` with their measured offset."""
    _require_moderator(actor, session)
    if not 1 <= seconds <= 6 * 3600:
        raise ValidationError("A timer runs between 1 second and 6 hours.")
    with transaction.atomic():
        control, _ = SessionControl.objects.select_for_update().get_or_create(
            session=session, defaults={"institution_id": session.institution_id})
        now = timezone.now()
        control.timer_label, control.timer_started_at = label[:80], now
        control.timer_ends_at = now + dt.timedelta(seconds=seconds)
        control.save(update_fields=["timer_label", "timer_started_at", "timer_ends_at", "updated_at"])
        room_event_emit(_room(session), "controls.updated", events.controls(control))
    return control


def timer_stop(*, session: LiveSession, actor: User) -> None:
    _require_moderator(actor, session)
    with transaction.atomic():
        control = SessionControl.objects.select_for_update().filter(session=session).first()
        if control is not None and control.timer_ends_at is not None:
            control.timer_label, control.timer_started_at, control.timer_ends_at = "", None, None
            control.save(update_fields=["timer_label", "timer_started_at", "timer_ends_at", "updated_at"])
            room_event_emit(_room(session), "controls.updated", events.controls(control))


# --- polls and quizzes -------------------------------------------------------------------------------

def poll_create(*, session: LiveSession, actor: User, question: str, kind: str, options: list[str],
                anonymous: bool = False, quiz: bool = False, correct: list[int] | None = None,
                results: str = Poll.Results.LIVE) -> Poll:
    _require_moderator(actor, session)
    question = question.strip()
    options = [o.strip() for o in options if o and o.strip()]
    correct = sorted(set(correct or []))
    if not question:
        raise ValidationError("A poll needs a question.")
    if kind not in Poll.Kind.values:
        raise ValidationError("Unknown poll kind.")
    if kind != Poll.Kind.OPEN and not 2 <= len(options) <= 12:
        raise ValidationError("A choice poll has 2 to 12 options.")
    if kind == Poll.Kind.OPEN and (options or quiz):
        raise ValidationError("An open-text poll has no options and cannot be a quiz.")
    if quiz and (not correct or any(not 0 <= c < len(options) for c in correct)):
        raise ValidationError("A quiz marks at least one existing option as correct.")
    if quiz and kind == Poll.Kind.SINGLE and len(correct) != 1:
        raise ValidationError("A single-choice quiz has exactly one correct option.")
    if quiz and anonymous:
        raise ValidationError("A quiz records per-student results, so it cannot be anonymous.")
    if session.status == LiveSession.Status.ENDED:
        raise ValidationError("The session has ended.")
    with transaction.atomic():
        poll = Poll.objects.create(institution_id=session.institution_id, session=session, question=question[:500],
                                   kind=kind, anonymous=anonymous, is_quiz=quiz, results_visibility=results,
                                   status=Poll.Status.OPEN, created_by=actor, opened_at=timezone.now())
        PollOption.objects.bulk_create(
            [PollOption(poll=poll, position=i, label=label[:200], is_correct=i in correct)
             for i, label in enumerate(options)])
        room_event_emit(_room(session), "poll.started", events.poll_started(poll))
    return poll


def _respondent_key(poll: Poll, user: User) -> str:
    return _respondent_key_for(poll.pk, poll.anonymous, user)


def _respondent_key_for(poll_id: int, anonymous: bool, user: User) -> str:
    """Anonymous polls store no user id: a keyed hash still lets one person answer once."""
    if not anonymous:
        return f"u{user.pk}"
    digest = hmac.new(settings.SECRET_KEY.encode(), f"poll{poll_id}:user{user.pk}".encode(), hashlib.sha256)
    return "h" + digest.hexdigest()[:40]


_POLL_ANSWER_SQL = """
INSERT INTO classrooms_pollanswer
    (institution_id, poll_id, user_id, respondent, attempt_id, option_positions, text, text_hidden, is_correct,
     created_at)
SELECT p.institution_id, p.id, %(user)s, %(respondent)s, %(attempt)s, %(positions)s::jsonb, %(text)s, %(hidden)s,
       %(correct)s, now()
FROM classrooms_poll p WHERE p.id = %(poll)s AND p.status = 'open'
FOR SHARE
ON CONFLICT (poll_id, respondent) DO NOTHING
RETURNING id, created_at
"""


def poll_answer(*, poll_id: int, user: User, attempt_id: uuid_module.UUID, positions: list[int] | None = None,
                text: str = "", session_id: int | None = None) -> tuple[PollAnswer, bool]:
    """Answer once. A replay with the same attempt id and answer is accepted again and counted once;
    anything else after a first answer is a Conflict. Returns (answer, created). `Poll.DoesNotExist` when
    there is no such poll (in `session_id`, when given).

    Two statements: one read of everything the answer depends on (`selectors.poll_answer_context`), and one
    INSERT … ON CONFLICT DO NOTHING guarded by the poll being open. The insert takes a share lock on the
    poll row, so answers never wait for each other (a row lock per answer serialised 2,000 of them:
    14–29 s, docs/benchmarks.md) while `poll_close`'s exclusive lock still orders them: an answer either
    commits before the close counts the final results, or sees the poll closed."""
    ctx = selectors.poll_answer_context(poll_id, user, session_id)
    if ctx is None:
        raise Poll.DoesNotExist("No such poll.")
    if ctx.block_reason:
        raise PermissionDenied(ctx.block_reason)
    if ctx.role in {Role.TEACHER, Role.TA}:
        raise PermissionDenied("Teachers do not answer their own polls.")
    positions = sorted(set(positions or []))
    text = _CONTROL_CHARS.sub("", text or "").strip()
    if ctx.kind == Poll.Kind.OPEN:
        if not text or positions:
            raise ValidationError("Answer an open poll with text.")
        if len(text) > 1000:
            raise ValidationError("An answer is at most 1000 characters.")
    else:
        if text or not positions or any(not 0 <= p < ctx.option_count for p in positions):
            raise ValidationError("Choose one of the poll's options.")
        if ctx.kind == Poll.Kind.SINGLE and len(positions) != 1:
            raise ValidationError("Choose exactly one option.")
    respondent = _respondent_key_for(poll_id, ctx.anonymous, user)
    verdict = screen_ctx = None
    if text:  # open text is shown to the class in the results: it passes moderation like chat
        existing = PollAnswer.objects.filter(poll_id=poll_id, respondent=respondent).first()
        if existing is not None:  # a replay or a second answer: decided below without screening again
            text = existing.text if existing.attempt_id == attempt_id else text  # stored form (maybe masked)
        else:
            session = LiveSession.objects.get(pk=ctx.session_id)
            _require_unsanctioned(session, user)
            from moderation.models import Source

            screen_ctx, verdict = _screen(session, user, Source.POLL_TEXT, text)
            text = verdict.text
    answer = PollAnswer(institution_id=ctx.institution_id, poll_id=poll_id, user=None if ctx.anonymous else user,
                        respondent=respondent, attempt_id=attempt_id, option_positions=positions, text=text,
                        text_hidden=verdict is not None and not verdict.visible,
                        is_correct=positions == sorted(ctx.correct) if ctx.is_quiz else None)
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(_POLL_ANSWER_SQL, {
                "user": answer.user_id, "respondent": respondent, "attempt": attempt_id,
                "positions": json.dumps(positions), "text": text, "hidden": answer.text_hidden,
                "correct": answer.is_correct, "poll": poll_id})
            row = cur.fetchone()
        if row is not None and verdict is not None:
            from moderation.services import verdict_record

            # An anonymous answer is audited without its author and not queued (a reviewer would learn who wrote
            # it); a held one simply stays hidden from the results.
            verdict_record(verdict=verdict, ctx=screen_ctx, object_id=row[0],
                           author_id=None if ctx.anonymous else user.pk, text=text)
    if row is not None:
        answer.pk, answer.created_at = row
        answer._state.adding = False
        # After the answer's own commit, with the dimensions the context read already has: observers do no
        # query per answer (2,000 answers arrive in seconds; a transaction and two lookups each were
        # measured to push the acks' p95 from 43 ms to 2.1 s).
        signals.poll_answered.send(sender=PollAnswer, answer=answer, session_id=ctx.session_id, dims={
            "school": ctx.institution_id, "course": ctx.course_id,
            "segment": "" if ctx.anonymous else (ctx.role or ""),
            "grade": "" if ctx.anonymous or ctx.role != Role.STUDENT else (ctx.grade or "")})
        return answer, True
    existing = PollAnswer.objects.filter(poll_id=poll_id, respondent=respondent).first()
    if existing is None:
        raise ValidationError("This poll is closed.")
    if existing.attempt_id == attempt_id and existing.option_positions == positions and existing.text == text:
        return existing, False
    raise Conflict("You already answered this poll.")


def poll_answer_text_set(*, answer_id: int, hidden: bool, text: str | None = None) -> PollAnswer | None:
    """A moderator's decision on an open-text answer: hide or show its text (optionally replaced by the
    masked or original form); the results are published again."""
    with transaction.atomic():
        answer = PollAnswer.objects.select_for_update().select_related("poll__session").filter(pk=answer_id).first()
        if answer is None:
            return None
        answer.text_hidden = hidden
        if text is not None:
            answer.text = text[:1000]
        answer.save(update_fields=["text_hidden", "text"])
        poll = answer.poll
        transaction.on_commit(lambda: poll_results_publish(poll=poll))
    return answer


def poll_results_publish(*, poll: Poll) -> dict:
    """Publish the current aggregate (coalesced by the caller); to everyone if results are live,
    otherwise to the teachers only until the poll closes."""
    data = events.poll_results(poll, selectors.poll_tally(poll))
    live = poll.results_visibility == Poll.Results.LIVE or poll.status == Poll.Status.CLOSED
    room_signal_publish(_room(poll.session) if live else
                        realtime.session_staff_room(poll.institution_id, poll.session_id), "poll.results", data)
    return data


def poll_close(*, poll: Poll, actor: User) -> Poll:
    _require_moderator(actor, poll.session)
    with transaction.atomic():
        poll = Poll.objects.select_for_update().get(pk=poll.pk)
        if poll.status == Poll.Status.CLOSED:
            return poll
        poll.status, poll.closed_at = Poll.Status.CLOSED, timezone.now()
        poll.save(update_fields=["status", "closed_at"])
        room_event_emit(_room(poll.session), "poll.closed", events.poll_closed(poll))
        # Final results are stored in the log, so late joiners and resumes get them too.
        room_event_emit(_room(poll.session), "poll.results",
                        events.poll_results(poll, selectors.poll_tally(poll)))
    return poll


# --- hand raise -----------------------------------------------------------------------------------

def hand_raise(*, session: LiveSession, user: User) -> HandRaise:
    _require_feature(session, user, Feature.HAND)
    if selectors.can_moderate(user, session):
        raise ValidationError("Teachers do not raise hands in their own class.")
    with transaction.atomic():
        _locked_session(session)  # serialises the queue: positions are never computed from a race
        hand = HandRaise.objects.filter(session=session, user=user, lowered_at__isnull=True).first()
        if hand is not None:
            return hand  # already raised: idempotent
        hand = HandRaise.objects.create(institution_id=session.institution_id, session=session, user=user)
        room_event_emit(_room(session), "hand.raised",
                        {"user": events.person(user), "raised_at": events._iso(hand.raised_at), "id": hand.pk})
    return hand


def _hand_lower(hand: HandRaise, actor: User, reason: str) -> None:
    hand.lowered_at, hand.lowered_by, hand.lowered_reason = timezone.now(), actor, reason
    hand.save(update_fields=["lowered_at", "lowered_by", "lowered_reason"])
    room_event_emit(_room(hand.session), "hand.lowered", events.hand_lowered(hand))


def hand_lower(*, session: LiveSession, actor: User, user: User | None = None) -> bool:
    """A student lowers their own hand; a teacher lowers anyone's."""
    target = user or actor
    if target.pk != actor.pk:
        _require_moderator(actor, session)
    with transaction.atomic():
        _locked_session(session)
        hand = HandRaise.objects.filter(session=session, user=target, lowered_at__isnull=True).first()
        if hand is None:
            return False
        _hand_lower(hand, actor, HandRaise.Lowered.SELF if target.pk == actor.pk else HandRaise.Lowered.TEACHER)
    return True


def hand_lower_all(*, session: LiveSession, actor: User) -> int:
    _require_moderator(actor, session)
    with transaction.atomic():
        _locked_session(session)
        hands = list(HandRaise.objects.filter(session=session, lowered_at__isnull=True))
        for hand in hands:
            _hand_lower(hand, actor, HandRaise.Lowered.ALL)
    return len(hands)


def hand_call_next(*, session: LiveSession, actor: User) -> HandRaise | None:
    """Call on the first student in the queue; their hand is lowered automatically."""
    _require_moderator(actor, session)
    with transaction.atomic():
        _locked_session(session)
        hand = (HandRaise.objects.filter(session=session, lowered_at__isnull=True)
                .select_related("user").order_by("raised_at", "id").first())
        if hand is None:
            return None
        _hand_lower(hand, actor, HandRaise.Lowered.CALLED)
        room_event_emit(_room(session), "hand.called", {"user": events.person(hand.user)})
    return hand


# --- attendance ------------------------------------------------------------------------------------

def attendance_interval_record(*, session_id: int, user_id: int, conn_id: str, joined_at: float, left_at: float,
                               active: float = 0, idle: float = 0, away: float = 0, resumed: bool = False,
                               reason: str = "closed") -> AttendanceInterval | None:
    """Store one connection's stay (idempotent per connection id: a swept ghost and a late close agree)."""
    session = LiveSession.objects.filter(pk=session_id).only("institution_id").first()
    if session is None or left_at < joined_at:
        return None
    from datetime import UTC, datetime

    try:
        interval, _ = AttendanceInterval.objects.get_or_create(
            conn_id=conn_id,
            defaults={"institution_id": session.institution_id, "session_id": session_id, "user_id": user_id,
                      "joined_at": datetime.fromtimestamp(joined_at, UTC),
                      "left_at": datetime.fromtimestamp(left_at, UTC), "active_seconds": active,
                      "idle_seconds": idle, "away_seconds": away, "resumed": resumed, "end_reason": reason})
    except IntegrityError:
        return None  # the account was deleted (COPPA deletion) while its socket was still open
    return interval


def attendance_compute(*, session: LiveSession, actor: User | None = None):
    """Recompute a session's attendance; a recompute asked for by a person is audited with them."""
    from classrooms.attendance import compute_session_attendance

    if actor is not None and not (selectors.can_moderate(actor, session)
                                  or selectors.is_school_staff(actor, session.institution_id)):
        raise PermissionDenied("Only the class's teachers and school staff recompute attendance.")
    records = compute_session_attendance(session)
    if actor is not None:
        _audit(session, actor, "attendance.recompute", records=len(records))
    return records
