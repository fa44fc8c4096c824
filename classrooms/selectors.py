"""Reads and permission checks for identity, tenancy and courses — the single tenant-scoping mechanism.

`institution_ids_for(user)` decides which institutions a user may see; every tenant-scoped queryset goes
through `TenantQuerySet.visible_to(user)`, which calls it. Pages, admin, API and consumers use these.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from classrooms import events
from classrooms.models import (  # noqa: I001
    Course,
    District,
    DistrictRole,
    Enrollment,
    Guardianship,
    Institution,
    LiveSession,
    LtiPlatform,
    Membership,
    Role,
    User,
)

_CACHE_ATTR = "_aula_institution_ids"


def institution_ids_for(user: User | AnonymousUser | None) -> frozenset[int] | None:
    """Institutions whose rows `user` may read. None means every institution (platform superuser).

    Cached on the user object for the life of a request or a socket connection check.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return None
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    ids = set(Membership.objects.filter(user=user, is_active=True).values_list("institution_id", flat=True))
    ids |= set(Enrollment.objects.filter(user=user, is_active=True).values_list("institution_id", flat=True))
    ids |= set(Guardianship.objects.filter(guardian=user).values_list("institution_id", flat=True))
    district_ids = DistrictRole.objects.filter(user=user).values_list("district_id", flat=True)
    ids |= set(Institution.objects.filter(district_id__in=district_ids).values_list("id", flat=True))
    result = frozenset(ids)
    setattr(user, _CACHE_ATTR, result)
    return result


def forget_scope(user: User) -> None:
    """Drop the cached scope, e.g. before a socket re-checks its user's access."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def staff_institution_ids(user: User) -> frozenset[int] | None:
    """Institutions the user administers in the Django admin (school staff, district admins)."""
    if user.is_superuser:
        return None
    ids = set(Membership.objects.filter(user=user, role=Role.STAFF, is_active=True)
              .values_list("institution_id", flat=True))
    district_ids = DistrictRole.objects.filter(user=user).values_list("district_id", flat=True)
    ids |= set(Institution.objects.filter(district_id__in=district_ids).values_list("id", flat=True))
    return frozenset(ids)


def districts_visible_to(user: User) -> QuerySet[District]:
    ids = institution_ids_for(user)
    if ids is None:
        return District.objects.all()
    return District.objects.filter(institutions__id__in=ids).distinct()


def users_visible_to(user: User) -> QuerySet[User]:
    """People connected to an institution the viewer may see (by membership, enrollment or guardianship)."""
    ids = institution_ids_for(user)
    if ids is None:
        return User.objects.all()
    subquery = (
        Q(memberships__institution_id__in=ids)
        | Q(enrollments__institution_id__in=ids)
        | Q(guardians__institution_id__in=ids)
        | Q(wards__institution_id__in=ids)
        | Q(pk=user.pk)
    )
    return User.objects.filter(pk__in=User.objects.filter(subquery).values("pk"))


def users_in_district(district: District) -> QuerySet[User]:
    """People with an active membership or an active enrollment at one of the district's schools: someone the
    district removed (membership or enrollment deactivated) no longer counts, even if the account lives on
    (accounts are shared across districts)."""
    inst = Institution.objects.filter(district=district).values("pk")
    return User.objects.filter(
        Q(pk__in=Membership.objects.filter(institution_id__in=inst, is_active=True).values("user_id"))
        | Q(pk__in=Enrollment.objects.filter(institution_id__in=inst, is_active=True).values("user_id"))
    )


def has_district_role(user: User, district: District) -> bool:
    return DistrictRole.objects.filter(user=user, district=district).exists()


def lti_platform_count(district: District | int) -> int:
    """How many LMS platforms the district has registered (active or not: their LTI identities remain)."""
    return LtiPlatform.objects.filter(district_id=getattr(district, "pk", district)).count()


def courses_for(user: User) -> QuerySet[Course]:
    """Courses the user takes or teaches (a student's and a teacher's home page)."""
    return Course.objects.visible_to(user).filter(
        enrollments__user=user, enrollments__is_active=True
    ).distinct()


def enrollment_role(user: User, course: Course | int) -> str | None:
    """The user's active role in a course (a Course or its id), or None. Plain SQL: it is on every
    privileged action and on the start of every exam attempt."""
    from django.db import connection

    if not user.is_authenticated:
        return None
    with connection.cursor() as cur:
        cur.execute("SELECT role FROM classrooms_enrollment WHERE user_id = %s AND course_id = %s AND is_active "
                    "ORDER BY id LIMIT 1", [user.pk, getattr(course, "pk", course)])
        row = cur.fetchone()
    return row[0] if row else None


def live_sessions_for(user: User) -> QuerySet[LiveSession]:
    return LiveSession.objects.visible_to(user).select_related("course", "institution")


def can_teach(user: User, course: Course) -> bool:
    return enrollment_role(user, course) in {Role.TEACHER, Role.TA}


def is_school_staff(user: User, institution_id: int) -> bool:
    ids = staff_institution_ids(user)
    return ids is None or institution_id in ids


def scoped_to(queryset: QuerySet, ids: frozenset[int] | None) -> QuerySet:
    """Restrict a TenantQuerySet to institution ids (None: no restriction, platform superuser)."""
    if ids is None:
        return queryset
    lookup = {f"{queryset.tenant_field}__in": ids}
    if getattr(queryset, "tenant_via_many", False):
        # Joined through a to-many path a row would repeat once per visible school: match it by id instead.
        return queryset.filter(pk__in=queryset.model._base_manager.filter(**lookup).values("pk"))
    return queryset.filter(**lookup)


def scoped(queryset: QuerySet, user) -> QuerySet:
    """Apply a user's tenant scope to any TenantQuerySet."""
    return scoped_to(queryset, institution_ids_for(user))


# --- live sessions: permissions and state --------------------------------------------------------------

def can_moderate(user: User, session: LiveSession) -> bool:
    """Teachers and TAs of the session's course (re-checked on every privileged action)."""
    if not user.is_authenticated or not user.is_active:
        return False
    ids = institution_ids_for(user)
    if ids is not None and session.institution_id not in ids:
        return False
    return enrollment_role(user, session.course) in {Role.TEACHER, Role.TA}


_JOIN_SQL = """
SELECT s.*,
       (SELECT e.role FROM classrooms_enrollment e
         WHERE e.course_id = s.course_id AND e.institution_id = s.institution_id AND e.user_id = %s AND e.is_active
         LIMIT 1) AS join_role,
       EXISTS (SELECT 1 FROM classrooms_participantstate ps
                WHERE ps.session_id = s.id AND ps.user_id = %s AND ps.removed_at IS NOT NULL) AS join_removed
FROM classrooms_livesession s WHERE s.id = %s
"""


def session_join_info(user: User, session_id: int) -> tuple[LiveSession | None, str | None, bool]:
    """A socket's join in one statement: (session, the user's active role in its course, removed?).

    An active enrollment in the session's course, at the session's institution, is what makes the session
    visible to a student or teacher, so the common case needs no separate scope lookup. Without one the
    answer falls back to `live_sessions_for` to tell "no such session for you" from "not in this class".
    Plain SQL: building the same query with the ORM cost more CPU than running it (a 2,000-student join
    storm, docs/benchmarks.md)."""
    if not user.is_authenticated or not user.is_active:
        return None, None, False
    session = next(iter(LiveSession.objects.raw(_JOIN_SQL, [user.pk, user.pk, session_id])), None)
    if session is not None and session.join_role is not None:
        return session, session.join_role, session.join_removed
    session = live_sessions_for(user).filter(pk=session_id).first()
    if session is None:
        return None, None, False
    return session, enrollment_role(user, session.course), is_removed(session, user)


_SNAPSHOT_HEAD_SQL = """
SELECT s.id, s.institution_id, s.course_id, s.title, s.status, s.started_at, s.ended_at, c.code,
       sc.session_id, sc.locked_features, sc.timer_label, sc.timer_started_at, sc.timer_ends_at,
       (SELECT q.last_seq FROM realtime_roomsequence q WHERE q.room_key = %(room)s),
       ps.id, ps.locked_features, ps.can_screen_share, ps.removed_at
FROM classrooms_livesession s
JOIN classrooms_course c ON c.id = s.course_id
LEFT JOIN classrooms_sessioncontrol sc ON sc.session_id = s.id
LEFT JOIN classrooms_participantstate ps ON ps.session_id = s.id AND ps.user_id = %(user)s
WHERE s.id = %(session)s
"""


@dataclass(frozen=True)
class SnapshotHead:
    session: LiveSession
    course_code: str
    last_seq: int
    control: object | None  # SessionControl
    state: object | None  # the user's ParticipantState


def snapshot_head(session_id: int, user: User, room_key: str) -> SnapshotHead | None:
    """The session, its course code, its class-wide controls, the room's last seq and the user's own
    participant state: the fixed part of every join's snapshot, in one statement."""
    from django.db import connection

    from classrooms.models import ParticipantState, SessionControl

    with connection.cursor() as cur:
        cur.execute(_SNAPSHOT_HEAD_SQL, {"session": session_id, "user": user.pk, "room": room_key})
        row = cur.fetchone()
    if row is None:
        return None
    (sid, institution_id, course_id, title, status, started_at, ended_at, code, control_id, class_locks,
     timer_label, timer_started_at, timer_ends_at, last_seq, state_id, own_locks, can_share, removed_at) = row
    session = LiveSession(id=sid, institution_id=institution_id, course_id=course_id, title=title, status=status,
                          started_at=started_at, ended_at=ended_at)
    control = None if control_id is None else SessionControl(
        session_id=control_id, institution_id=institution_id, locked_features=_json(class_locks) or [],
        timer_label=timer_label, timer_started_at=timer_started_at, timer_ends_at=timer_ends_at)
    state = None if state_id is None else ParticipantState(
        id=state_id, session_id=sid, user_id=user.pk, institution_id=institution_id,
        locked_features=_json(own_locks) or [], can_screen_share=can_share, removed_at=removed_at)
    return SnapshotHead(session, code, last_seq or 0, control, state)


def session_access_many(session_id: int, user_ids: list[int]) -> tuple[str | None, set[int], set[int]]:
    """For a room's periodic re-check: (session status or None if gone, the users still actively enrolled
    with an active account, the users removed from the session) — three queries whatever the room size."""
    from classrooms.models import ParticipantState

    row = LiveSession.objects.filter(pk=session_id).values("status", "course_id", "institution_id").first()
    if row is None:
        return None, set(), set()
    enrolled = set(Enrollment.objects.filter(course_id=row["course_id"], institution_id=row["institution_id"],
                                             is_active=True, user__is_active=True, user_id__in=user_ids)
                   .values_list("user_id", flat=True))
    removed = set(ParticipantState.objects.filter(session_id=session_id, user_id__in=user_ids,
                                                  removed_at__isnull=False).values_list("user_id", flat=True))
    return row["status"], enrolled, removed


def participant_state(session: LiveSession, user: User):
    from classrooms.models import ParticipantState

    return ParticipantState.objects.filter(session=session, user=user).first()


def feature_block_reason(session: LiveSession, user: User, feature: str) -> str | None:
    """Why `user` may not use `feature` now, or None. Teachers and TAs are never blocked."""
    return feature_access(session, user, feature)[1]


def feature_access(session: LiveSession, user: User, feature: str) -> tuple[str | None, str | None]:
    """(the user's role in the class, why they may not use `feature` now or None).

    One query on the hot path (every chat message, poll answer and hand raise): the session's current
    status, the user's role, removal and personal locks, and the class-wide locks."""
    from django.db import connection

    if not user.is_authenticated:
        return None, "You are not in this class."
    with connection.cursor() as cur:
        cur.execute(_FEATURE_SQL, {"session": session.pk, "user": user.pk})
        row = cur.fetchone()
    if row is None:
        return None, "The session has ended."
    status, role, removed_at, own_locks, class_locks = row
    return role, _block_reason(status, role, removed_at, _json(class_locks), _json(own_locks), feature)


_FEATURE_SQL = """
SELECT s.status,
       (SELECT e.role FROM classrooms_enrollment e
         WHERE e.course_id = s.course_id AND e.user_id = %(user)s AND e.is_active LIMIT 1),
       ps.removed_at, ps.locked_features, sc.locked_features
FROM classrooms_livesession s
LEFT JOIN classrooms_participantstate ps ON ps.session_id = s.id AND ps.user_id = %(user)s
LEFT JOIN classrooms_sessioncontrol sc ON sc.session_id = s.id
WHERE s.id = %(session)s
"""


def _block_reason(status, role, removed_at, class_locks, own_locks, feature: str) -> str | None:
    if status == LiveSession.Status.ENDED:
        return "The session has ended."
    if role is None:
        return "You are not in this class."
    if role in {Role.TEACHER, Role.TA}:
        return None
    if removed_at is not None:
        return "You were removed from this session."
    if feature in (class_locks or ()):
        return f"The teacher has turned off {feature} for the class."
    if feature in (own_locks or ()):
        return f"The teacher has turned off {feature} for you."
    return None


_POLL_ANSWER_CONTEXT_SQL = """
SELECT p.kind, p.status, p.anonymous, p.is_quiz, p.institution_id, s.status,
       (SELECT e.role FROM classrooms_enrollment e
         WHERE e.course_id = s.course_id AND e.user_id = %(user)s AND e.is_active LIMIT 1),
       ps.removed_at, ps.locked_features, sc.locked_features,
       (SELECT count(*) FROM classrooms_polloption o WHERE o.poll_id = p.id),
       (SELECT coalesce(jsonb_agg(o.position ORDER BY o.position), '[]'::jsonb)
          FROM classrooms_polloption o WHERE o.poll_id = p.id AND o.is_correct),
       p.session_id, s.course_id,
       (SELECT m.grade_level FROM classrooms_membership m
         WHERE m.user_id = %(user)s AND m.institution_id = p.institution_id AND m.role = 'student'
           AND m.is_active LIMIT 1)
FROM classrooms_poll p
JOIN classrooms_livesession s ON s.id = p.session_id
LEFT JOIN classrooms_participantstate ps ON ps.session_id = s.id AND ps.user_id = %(user)s
LEFT JOIN classrooms_sessioncontrol sc ON sc.session_id = s.id
WHERE p.id = %(poll)s AND (%(session)s::bigint IS NULL OR p.session_id = %(session)s::bigint)
"""


@dataclass(frozen=True)
class PollAnswerContext:
    """Everything answering a poll needs to know, read in one statement (400 answers a second in a big
    lecture: the ORM's five queries per answer were the bottleneck, docs/benchmarks.md)."""

    kind: str
    status: str
    anonymous: bool
    is_quiz: bool
    institution_id: int
    role: str | None
    block_reason: str | None
    option_count: int
    correct: list[int]
    session_id: int
    course_id: int
    grade: str | None  # the student's grade level at the school (analytics dimension)


def poll_answer_context(poll_id: int, user: User, session_id: int | None = None) -> PollAnswerContext | None:
    """None when the poll does not exist (in that session, when given)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(_POLL_ANSWER_CONTEXT_SQL, {"poll": poll_id, "user": user.pk, "session": session_id})
        row = cur.fetchone()
    if row is None:
        return None
    kind, status, anonymous, is_quiz, institution_id, session_status, role, removed_at, own, cls, n, correct, \
        session, course, grade = row
    own, cls, correct = _json(own), _json(cls), _json(correct)
    return PollAnswerContext(kind, status, anonymous, is_quiz, institution_id, role,
                             _block_reason(session_status, role, removed_at, cls, own, "polls"), n, correct, session,
                             course, grade)


def _json(value):
    """jsonb from a raw cursor: Django's PostgreSQL backend leaves it as text for JSONField to decode."""
    import json

    return json.loads(value) if isinstance(value, str) else value


def is_removed(session: LiveSession, user: User) -> bool:
    state = participant_state(session, user)
    return state is not None and state.removed_at is not None


def hand_queue(session: LiveSession):
    """Raised hands in order, each with its student (for names): one plain statement, no ORM build-up."""
    from django.db import connection

    from classrooms.models import HandRaise

    with connection.cursor() as cur:
        cur.execute("""
            SELECT h.id, h.raised_at, u.id, u.username, u.first_name, u.display_name
            FROM classrooms_handraise h JOIN classrooms_user u ON u.id = h.user_id
            WHERE h.session_id = %s AND h.lowered_at IS NULL ORDER BY h.raised_at, h.id""", [session.pk])
        rows = cur.fetchall()
    return [HandRaise(id=hid, session_id=session.pk, institution_id=session.institution_id, raised_at=raised_at,
                      user=User(id=uid, username=username, first_name=first_name, display_name=display_name))
            for hid, raised_at, uid, username, first_name, display_name in rows]


_SHARED_TTL = 2.0  # seconds: the longest a non-seq'd edit (a renamed session) can stay out of new snapshots
_shared_lock = threading.Lock()
_shared: dict[str, tuple[int, float, dict]] = {}


def room_shared_state(session: LiveSession, room_key: str, last_seq: int) -> dict:
    """What every participant's snapshot shares at `last_seq`: the last polls (with options), the chat
    history and the hand queue. Everything in it changes only through stored events, which move the room's
    seq, so an entry built at the same seq is the same state; it is kept per process for `_SHARED_TTL` seconds.
    In a join storm, 2,000 students then cost one build instead of 2,000 (docs/benchmarks.md). Per-user parts
    (own answers, own controls) and live poll results (they change without a seq) are never cached."""
    from classrooms.models import Poll

    now = time.monotonic()
    with _shared_lock:
        hit = _shared.get(room_key)
    if hit is not None and hit[0] == last_seq and now - hit[1] < _SHARED_TTL:
        return hit[2]
    state = {
        "polls": list(reversed(Poll.objects.filter(session=session).exclude(status=Poll.Status.DRAFT)
                               .prefetch_related("options").order_by("-id")[:10])),
        "chat": recent_chat_payloads(session),
        "hands": events.hand_queue(hand_queue(session))["queue"],
    }
    with _shared_lock:
        current = _shared.get(room_key)
        if current is None or current[0] <= last_seq:
            _shared[room_key] = (last_seq, now, state)
        if len(_shared) > 10_000:  # rooms come and go: keep the map bounded
            _shared.pop(next(iter(_shared)))
    return state


def own_poll_answers(polls, user: User) -> dict[int, dict]:
    """A student's own answers to these polls (anonymous ones found by their keyed hash), in one query."""
    from classrooms.models import PollAnswer
    from classrooms.services import _respondent_key

    keys = {_respondent_key(poll, user): poll.pk for poll in polls}
    if not keys:
        return {}
    return {a["poll_id"]: {"option_positions": a["option_positions"], "text": a["text"]}
            for a in PollAnswer.objects.filter(poll_id__in=list(keys.values()), respondent__in=keys)
            .values("poll_id", "respondent", "option_positions", "text")
            if keys.get(a["respondent"]) == a["poll_id"]}


def recent_chat_payloads(session: LiveSession, limit: int = 100) -> list[dict]:
    """The last chat messages as they were broadcast (the room log's payloads, deleted ones excluded):
    for snapshots, without building a model instance per message and author."""
    from classrooms import realtime
    from config.realtime.models import RoomEvent

    rows = (RoomEvent.objects.filter(room_key=realtime.session_room(session.institution_id, session.pk),
                                     type="chat.message")
            .exclude(payload__has_key="deleted").order_by("-seq").values_list("seq", "payload")[:limit])
    return [payload | {"seq": seq} for seq, payload in reversed(rows)]


_TALLY_SQL = """
SELECT (SELECT count(*) FROM classrooms_pollanswer WHERE poll_id = %(poll)s),
       (SELECT coalesce(jsonb_object_agg(pos, n), '{}'::jsonb) FROM (
            SELECT pos, count(*) AS n
            FROM classrooms_pollanswer a, jsonb_array_elements_text(a.option_positions) AS pos
            WHERE a.poll_id = %(poll)s GROUP BY pos) counted)
"""


def poll_tally(poll) -> tuple[int, dict[int, int], list[str]]:
    """(respondents, answers per option position, the latest open-text answers): counted in SQL, so a
    results frame costs the same with 20 or 2,000 answers."""
    from django.db import connection

    from classrooms.models import Poll, PollAnswer

    with connection.cursor() as cur:
        cur.execute(_TALLY_SQL, {"poll": poll.pk})
        respondents, counts = cur.fetchone()
    counts = _json(counts)
    texts: list[str] = []
    if poll.kind == Poll.Kind.OPEN:
        texts = list(reversed(PollAnswer.objects.filter(poll=poll, text_hidden=False).exclude(text="").order_by("-id")
                              .values_list("text", flat=True)[:200]))
    return respondents, {int(k): v for k, v in counts.items()}, texts


# --- shared whiteboard and notes (docs/collab.md) -------------------------------------------------------

COLLAB_FEATURES = {"board": "whiteboard", "notes": "notes"}  # document kind → the Feature that locks it


def collab_edit_reasons(session_id: int, user_ids: list[int]) -> dict[int, dict[str, str | None]]:
    """Why each user may not edit the board / the notes now (None: may), in three queries for a whole room:
    the session and its class-wide locks, the users' roles, their own locks and removal."""
    from classrooms.models import ParticipantState, SessionControl

    row = LiveSession.objects.filter(pk=session_id).values("status", "course_id").first()
    if row is None:
        return {uid: dict.fromkeys(COLLAB_FEATURES, "The session has ended.") for uid in user_ids}
    class_locks = SessionControl.objects.filter(session_id=session_id).values_list("locked_features", flat=True)
    class_locks = _json(next(iter(class_locks), None)) or []
    roles = dict(Enrollment.objects.filter(course_id=row["course_id"], user_id__in=user_ids, is_active=True)
                 .values_list("user_id", "role"))
    states = {uid: (removed, _json(locks) or []) for uid, removed, locks in ParticipantState.objects
              .filter(session_id=session_id, user_id__in=user_ids)
              .values_list("user_id", "removed_at", "locked_features")}
    out = {}
    for uid in user_ids:
        removed, own = states.get(uid, (None, []))
        out[uid] = {kind: _block_reason(row["status"], roles.get(uid), removed, class_locks, own, feature)
                    for kind, feature in COLLAB_FEATURES.items()}
    return out


def collab_log(document) -> tuple[bytes | None, QuerySet]:
    """A document as stored: the latest checkpoint's state (None before the first) and the log rows after it,
    in order."""
    from classrooms.models import CollabCheckpoint, CollabUpdate

    checkpoint = (CollabCheckpoint.objects.filter(document=document).order_by("-upto")
                  .values_list("upto", "state").first())
    upto, base = checkpoint if checkpoint else (0, None)
    return (bytes(base) if base else None), \
        CollabUpdate.objects.filter(document=document, id__gt=upto).order_by("id")


def collab_load(session: LiveSession) -> dict[str, dict]:
    """What a server process needs to hold a session's documents: per kind its id, the latest checkpoint
    plus the log after it (in order), and the replica → person bindings."""
    from classrooms.collab_services import documents_ensure
    from classrooms.models import CollabClient

    out = {}
    for kind, document in documents_ensure(session).items():
        base, log = collab_log(document)
        tail = [bytes(d) for d in log.values_list("data", flat=True)]
        clients = dict(CollabClient.objects.filter(document=document).values_list("client_id", "user_id"))
        out[kind] = {"id": document.pk, "parts": ([base] if base else []) + tail, "tail": len(tail),
                     "clients": clients}
    return out


def collab_state(document) -> bytes:
    """The document's whole current state as one Yjs update (latest checkpoint merged with the log)."""
    from pycrdt import Doc

    base, log = collab_log(document)
    doc = Doc()
    if base:
        doc.apply_update(base)
    for data in log.values_list("data", flat=True).iterator(chunk_size=2000):
        try:
            doc.apply_update(bytes(data))
        except ValueError:
            continue  # refused at the door; never stored — but a damaged row must not block an export
    return doc.get_update()


def collab_work(document) -> tuple[list, dict]:
    """Each person's share of a document, without writing anything: the contribution rows the compactor
    folded, and the counts of the log after the latest checkpoint ({user_id: Counts}). Exports, history and the
    contribution summary read this (a FERPA access per contributing student)."""
    from classrooms.collab_attribution import attribute
    from classrooms.models import CollabContribution

    rows = list(CollabContribution.objects.filter(document=document).select_related("user"))
    base, log = collab_log(document)
    tail = [(author, bytes(data), at) for author, data, at in log.values_list("author_id", "data", "created_at")]
    counts = attribute(document.kind, base, tail)[1] if tail else {}
    return rows, counts


def collab_people(session: LiveSession, user_ids) -> dict[int, dict]:
    """Names, roles and colours of the people who wrote in a session's documents (directory information)."""
    roles = dict(Enrollment.objects.filter(course_id=session.course_id, user_id__in=list(user_ids))
                 .values_list("user_id", "role"))
    return {u.pk: {"name": u.public_name, "role": roles.get(u.pk, ""), "color": person_color(u.pk)}
            for u in User.objects.filter(pk__in=list(user_ids))}


_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#469990",
            "#9a6324", "#800000", "#808000", "#000075", "#e6a800", "#2f8f2f", "#c71585", "#1e6fa8")


def person_color(user_id: int) -> str:
    """A stable, distinct-enough colour per person for cursors and authorship (same on every screen)."""
    return _PALETTE[(int(user_id) * 2654435761) % len(_PALETTE)]


def session_quiz_scores(session_id: int) -> tuple[int, dict[int, int]]:
    """(quizzes in the session, {enrolled student who answered any of them: correct answers}) — the class quiz
    result that goes to an LMS grade column. Students who answered no quiz get no grade (not a zero)."""
    from django.db.models import Count, Q

    from classrooms.models import Enrollment, LiveSession, Poll, PollAnswer, Role

    total = Poll.objects.filter(session_id=session_id, is_quiz=True).count()
    students = Enrollment.objects.filter(  # a teacher trying the quiz out is not graded
        course_id__in=LiveSession.objects.filter(pk=session_id).values("course_id"), role=Role.STUDENT,
        is_active=True).values("user_id")
    rows = (PollAnswer.objects.filter(poll__session_id=session_id, poll__is_quiz=True, user__in=students)
            .values("user_id").annotate(right=Count("id", filter=Q(is_correct=True))))
    return total, {r["user_id"]: r["right"] for r in rows}
