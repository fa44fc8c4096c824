"""How a child's personal information is removed from every store it lives in (used by coppa.services).

The stores, and what happens in each (docs/compliance.md keeps the same list for people):
- the account row and every row that hangs off it (memberships, enrollments, guardianships, chat
  messages, named poll answers, hand raises, attendance, participant states, consents, exam attempts and
  answers, channel roles): deleted with the account (foreign keys cascade); a streaming channel the child
  owns, with its streams;
- anonymous poll answers (no user id; found by the keyed hash that made them one per person): deleted;
- the rooms' event logs (the resume log holds chat text and names): the child's messages blanked, their
  name and id removed from every event that carried them, their written answers removed from results;
  the event logs of their own exam rooms deleted;
- the audit trail: entries about the child's rows, or made by the child, keep what was done and when but
  lose names, values, e-mail and network addresses (the entry is then about a token, not a person);
- login sessions (database and cache): deleted, so every open page is signed out; open sockets are closed
  by the socket re-check (config/realtime/consumer.py), which closes any socket whose user is gone;
- presence in Redis: the child's entries removed from every room they could be in.
Celery keeps no task results (CELERY_RESULT_BACKEND is unset) and tasks carry ids only, so no task data
remains; the analytics app stores no rows yet.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Q

from classrooms.models import ChatMessage, LiveSession, Poll, PollAnswer, User
from config.realtime.models import RoomEvent, RoomSequence

logger = logging.getLogger("aula.compliance")

REMOVED_NAME = ""


@dataclass
class Plan:
    """What to remove, gathered before the account row goes (cascades remove the trail to it)."""

    user_id: int
    joined: dt.datetime
    presence_rooms: list[str] = field(default_factory=list)
    exam_rooms: list[str] = field(default_factory=list)
    texts_by_poll: dict[int, list[str]] = field(default_factory=dict)
    anonymous_keys: list[str] = field(default_factory=list)


def plan(student: User) -> Plan:
    from classrooms import realtime
    from classrooms.services import _respondent_key_for

    p = Plan(user_id=student.pk, joined=student.date_joined)
    course_ids = list(student.enrollments.values_list("course_id", flat=True))
    sessions = LiveSession.objects.filter(course_id__in=course_ids)
    p.presence_rooms = [realtime.session_room(inst, sid) for sid, inst in
                        sessions.exclude(status=LiveSession.Status.ENDED).values_list("id", "institution_id")]
    p.exam_rooms = _exam_rooms(student)
    for poll_id, text in PollAnswer.objects.filter(user=student).exclude(text="").values_list("poll_id", "text"):
        p.texts_by_poll.setdefault(poll_id, []).append(text)
    anonymous = Poll.objects.filter(session__in=sessions, anonymous=True).values_list("id", flat=True)
    keys = {_respondent_key_for(poll_id, True, student): poll_id for poll_id in anonymous}
    for poll_id, respondent, text in PollAnswer.objects.filter(poll_id__in=list(keys.values()),
                                                              respondent__in=list(keys)) \
            .values_list("poll_id", "respondent", "text"):
        if keys.get(respondent) == poll_id:
            p.anonymous_keys.append(respondent)
            if text:
                p.texts_by_poll.setdefault(poll_id, []).append(text)
    return p


def _exam_rooms(student: User) -> list[str]:
    from exams import realtime as exam_realtime
    from exams.models import Attempt

    return [exam_realtime.attempt_room(inst, pk)
            for pk, inst in Attempt.objects.filter(student=student).values_list("id", "institution_id")]


def _audited_rows(objs: list) -> dict[int, list[str]]:
    """Every audited row that deleting `objs` removes (Django's own cascade collector): the audit entries
    about those rows carry the child's name in their representation and values."""
    from auditlog.registry import auditlog
    from django.contrib.contenttypes.models import ContentType
    from django.db.models.deletion import Collector

    registered = set(auditlog.get_models())
    collector = Collector(using="default")
    collector.collect(objs)
    rows: dict[int, list[str]] = {}
    for model, instances in collector.data.items():
        if model in registered:
            rows.setdefault(ContentType.objects.get_for_model(model).pk, []).extend(str(o.pk) for o in instances)
    return rows


def erase_database(student: User, p: Plan, *, token: str) -> dict[str, int]:
    """Inside the caller's transaction. Returns counts per store."""
    removed: dict[str, int] = {}
    removed["room_events_scrubbed"] = _scrub_room_log(p)
    count, _ = RoomEvent.objects.filter(room_key__in=p.exam_rooms).delete()
    RoomSequence.objects.filter(room_key__in=p.exam_rooms).delete()
    removed["room_events_deleted"] = count
    count, _ = PollAnswer.objects.filter(user__isnull=True, respondent__in=p.anonymous_keys).delete()
    removed["anonymous_poll_answers"] = count
    removed["login_sessions"] = _end_login_sessions(p.user_id)
    from streaming.models import Channel

    audited: dict[int, list[str]] = {}
    # A channel protects its owner from deletion: a child's own channel (and its streams) goes first.
    channels = list(Channel.objects.filter(owner=student))
    deleted = []
    if channels:
        audited = _audited_rows(channels)
        deleted.append(Channel.objects.filter(pk__in=[c.pk for c in channels]).delete()[1])
    from classrooms.collab_services import person_content_erase

    for key, n in person_content_erase(user_id=student.pk).items():  # before the replica bindings cascade away
        removed[key] = removed.get(key, 0) + n
    for content_type_id, pks in _audited_rows([student]).items():
        audited.setdefault(content_type_id, []).extend(pks)
    deleted.append(student.delete()[1])
    for by_model in deleted:
        for label, n in by_model.items():
            if n:
                removed[label] = removed.get(label, 0) + n
    # After the delete: django-auditlog has just written a "deleted" entry (with every field) for the
    # account and each cascaded audited row; those are redacted with the older ones.
    removed["audit_entries_redacted"] = _redact_audit_trail(p.user_id, audited, token)
    return removed


def _person_scrubbed(value, uid: int):
    """The payload with the child's {id, name} and user ids taken out, recursively."""
    if isinstance(value, dict):
        if value.get("id") == uid and "name" in value:
            return {**value, "id": None, "name": REMOVED_NAME}
        return {k: (None if k in ("user_id", "student_id") and v == uid else _person_scrubbed(v, uid))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_person_scrubbed(v, uid) for v in value]
    return value


def _without_texts(texts: list, removed: list[str]) -> list:
    left = list(removed)
    out = []
    for text in texts:
        if text in left:
            left.remove(text)
        else:
            out.append(text)
    return out


def _scrub_room_log(p: Plan) -> int:
    uid = p.user_id
    mentions = (Q(payload__author__id=uid) | Q(payload__user__id=uid) | Q(payload__user_id=uid)
                | Q(payload__student_id=uid))
    if p.texts_by_poll:
        mentions |= Q(type="poll.results", payload__poll_id__in=list(p.texts_by_poll))
    changed = 0
    for event in RoomEvent.objects.filter(mentions, created_at__gte=p.joined - dt.timedelta(minutes=1)) \
            .only("id", "type", "payload"):
        payload = _person_scrubbed(event.payload, uid)
        if event.type == "chat.message" and (event.payload.get("author") or {}).get("id") == uid:
            payload = {**payload, "body": "", "deleted": True}
        if event.type == "poll.results" and payload.get("poll_id") in p.texts_by_poll and "texts" in payload:
            payload = {**payload, "texts": _without_texts(payload["texts"], p.texts_by_poll[payload["poll_id"]])}
        if payload != event.payload:
            event.payload = payload
            event.save(update_fields=["payload"])
            changed += 1
    return changed


def _redact_audit_trail(user_id: int, audited: dict[int, list[str]], token: str) -> int:
    from auditlog.models import LogEntry

    about = Q()
    for content_type_id, pks in audited.items():
        about |= Q(content_type_id=content_type_id, object_pk__in=pks)
    from compliance.audit import retention_purge

    label = f"(deleted child {token[:12]})"
    # The trail is append-only (a database trigger); this lawful erasure is the one redaction it allows,
    # and the deletion itself is recorded (ChildDataDeletion, tokenised).
    with retention_purge():
        count = LogEntry.objects.filter(about).update(
            object_repr=label, changes=None, changes_text="", serialized_data=None, additional_data=None)
        # Entries the child made keep the action, not who or where from.
        count += LogEntry.objects.filter(actor_id=user_id).update(
            actor=None, actor_email=None, remote_addr=None, remote_port=None)
    return count


def _end_login_sessions(user_id: int) -> int:
    """Every unexpired login of the user, from the database and the cache (cached_db sessions)."""
    from importlib import import_module

    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    store = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator(chunk_size=2000):
        if str(session.get_decoded().get(SESSION_KEY)) == str(user_id):
            store(session.session_key).delete()
            ended += 1
    return ended


def erase_realtime(p: Plan) -> None:
    """After commit: the child's presence entries in Redis (names shown to classmates)."""
    from config.realtime.presence import forget_user

    try:
        forget_user(p.presence_rooms, p.user_id)
    except Exception:
        # Presence entries also expire on their own (config/realtime/presence.TTL) once the socket is gone.
        logger.exception("coppa deletion: presence cleanup failed; entries expire with their TTL")


# --- retention: what children wrote, after the content period ------------------------------------------

_CHILD_CHAT_SQL = """
SELECT m.id FROM classrooms_chatmessage m JOIN classrooms_user u ON u.id = m.author_id
WHERE m.created_at < %s AND u.date_of_birth IS NOT NULL AND u.date_of_birth + interval '13 years' > m.created_at
"""

_CHILD_ANSWER_SQL = """
SELECT a.id FROM classrooms_pollanswer a JOIN classrooms_user u ON u.id = a.user_id
WHERE a.created_at < %s AND a.text <> '' AND u.date_of_birth IS NOT NULL
  AND u.date_of_birth + interval '13 years' > a.created_at
"""


def erase_child_content(*, before: dt.datetime) -> dict[str, int]:
    """Chat messages and written answers by people who were under 13 when they wrote them, older than
    `before`, and their copies in the room logs. Idempotent: removed rows are not found again."""
    with connection.cursor() as cur:
        cur.execute(_CHILD_CHAT_SQL, [before])
        message_ids = [r[0] for r in cur.fetchall()]
        cur.execute(_CHILD_ANSWER_SQL, [before])
        answer_ids = [r[0] for r in cur.fetchall()]
    removed: dict[str, int] = {}
    if message_ids:
        scrubbed = 0
        for event in RoomEvent.objects.filter(type="chat.message", payload__id__in=message_ids):
            author = (event.payload.get("author") or {}).get("id")
            event.payload = {**_person_scrubbed(event.payload, author), "body": "", "deleted": True}
            event.save(update_fields=["payload"])
            scrubbed += 1
        removed["chat_messages"], _ = ChatMessage.objects.filter(id__in=message_ids).delete()
        removed["room_events_scrubbed"] = scrubbed
    from classrooms.collab_services import child_content_erase

    removed.update(child_content_erase(before=before))
    anonymous_ids = _anonymous_child_answers(before)
    if answer_ids or anonymous_ids:
        texts: dict[int, list[str]] = {}
        for poll_id, text in PollAnswer.objects.filter(id__in=answer_ids + anonymous_ids) \
                .values_list("poll_id", "text"):
            texts.setdefault(poll_id, []).append(text)
        for event in RoomEvent.objects.filter(type="poll.results", payload__poll_id__in=list(texts)):
            event.payload = {**event.payload, "texts": _without_texts(event.payload.get("texts") or [],
                                                                      texts[event.payload["poll_id"]])}
            event.save(update_fields=["payload"])
        if answer_ids:
            removed["poll_answers"], _ = PollAnswer.objects.filter(id__in=answer_ids).delete()
        if anonymous_ids:
            removed["anonymous_poll_answers"], _ = PollAnswer.objects.filter(id__in=anonymous_ids).delete()
    return removed


def _anonymous_child_answers(before: dt.datetime) -> list[int]:
    """Written answers to anonymous polls carry no user id: the keyed hash of each student of the class who
    was under 13 at the time finds theirs."""
    from classrooms.services import _respondent_key_for

    ids: list[int] = []
    polls = (Poll.objects.filter(anonymous=True, kind=Poll.Kind.OPEN, created_at__lt=before)
             .filter(answers__created_at__lt=before).exclude(answers__text="").distinct()
             .values_list("id", "created_at", "session__course_id"))
    for poll_id, created_at, course_id in polls:
        born_after = _years_before(created_at.date(), 13)
        children = User.objects.filter(enrollments__course_id=course_id, date_of_birth__gt=born_after)
        keys = [_respondent_key_for(poll_id, True, child) for child in children]
        if keys:
            ids += PollAnswer.objects.filter(poll_id=poll_id, respondent__in=keys, created_at__lt=before) \
                .exclude(text="").values_list("id", flat=True)
    return ids


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)
