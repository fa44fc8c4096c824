"""COPPA: the consent gate (selector, page, socket), guardian revocation and deletion, deletion everywhere,
and the retention purge — against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest
import redis
from auditlog.models import LogEntry
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from classrooms import services as classroom_services
from classrooms.models import AttendanceInterval, ChatMessage, Guardianship, PollAnswer, User
from compliance.coppa import selectors as coppa
from compliance.coppa import services
from compliance.models import ChildDataDeletion, ParentalConsent, PersonalInfoFeature, RetentionRun
from config.realtime.models import RoomEvent
from tests import factories
from tests.classrooms.test_consumers import connect, wait_closed

CHAT, TEXT = PersonalInfoFeature.CHAT, PersonalInfoFeature.FREE_TEXT
KID_NAME = "Zebulon Quixote"  # a name that is easy to find anywhere it might remain


def make_child(world, name: str = "kid", age: int = 11) -> User:
    child = factories.user(name, age=age)
    classroom_services.user_upsert(email=child.email, first_name="Zebulon", last_name="Quixote",
                                   display_name=KID_NAME, date_of_birth=child.date_of_birth)
    factories.enroll(world.course_a, child)
    return User.objects.get(pk=child.pk)


def consent(world, child, scope=(CHAT, TEXT, PersonalInfoFeature.COLLAB), **extra) -> ParentalConsent:
    return services.consent_record(student=child, institution=world.school_a, guardian_name="Pat Parent",
                                   method=ParentalConsent.Method.SIGNED_FORM, evidence_reference="form 2026-041",
                                   scope=list(scope), actor=world.staff_a, **extra)


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # no kept answer from an earlier check


# --- the gate ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_child_is_blocked_until_consent_and_only_for_its_scope(world):
    child = make_child(world)
    assert child.is_under_13
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)
    assert "consent" in coppa.consent_block_reason(fresh(child), TEXT)

    record = consent(world, child, scope=[CHAT])
    assert coppa.can_collect_personal_info(fresh(child), CHAT)
    assert not coppa.can_collect_personal_info(fresh(child), TEXT)  # not in the consent's scope

    services.consent_revoke(consent=record, actor=world.staff_a)
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)


@pytest.mark.django_db
def test_school_authorization_covers_only_its_own_school_and_dates(world):
    child = make_child(world)
    today = timezone.localdate()
    services.school_authorization_record(institution=world.school_b, scope=[CHAT], authorized_on=today,
                                         signatory="Principal B", evidence_reference="board minute 7",
                                         actor=world.staff_b)
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)  # not the child's school

    expired = services.school_authorization_record(
        institution=world.school_a, scope=[CHAT], authorized_on=today - dt.timedelta(days=400),
        expires_on=today - dt.timedelta(days=1), signatory="Principal A", evidence_reference="letter 2025",
        actor=world.staff_a)
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)

    current = services.school_authorization_record(
        institution=world.school_a, scope=[CHAT], authorized_on=today, signatory="Principal A",
        evidence_reference="letter 2026", actor=world.staff_a)
    assert coppa.can_collect_personal_info(fresh(child), CHAT, institution_id=world.school_a.pk)
    assert not coppa.can_collect_personal_info(fresh(child), CHAT, institution_id=world.school_b.pk)
    assert not coppa.can_collect_personal_info(fresh(child), TEXT)

    services.school_authorization_revoke(authorization=current, actor=world.staff_a)
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)
    assert expired.revoked_at is None


@pytest.mark.django_db
def test_the_gate_costs_nothing_for_older_users_and_once_for_a_child(world, django_assert_num_queries):
    teen, adult = world.student_a, world.teacher_a
    child = fresh(make_child(world))
    with django_assert_num_queries(0):
        assert coppa.can_collect_personal_info(teen, CHAT)
        assert coppa.can_collect_personal_info(adult, TEXT)
    with django_assert_num_queries(2):
        coppa.can_collect_personal_info(child, CHAT)
    with django_assert_num_queries(0):  # kept on the user object: a socket's later frames pay nothing
        for _ in range(5):
            coppa.can_collect_personal_info(child, CHAT)
            coppa.can_collect_personal_info(child, TEXT)


@pytest.mark.django_db
def test_only_staff_of_the_childs_school_record_consent(world):
    from django.core.exceptions import PermissionDenied, ValidationError

    child = make_child(world)
    with pytest.raises(PermissionDenied):
        services.consent_record(student=child, institution=world.school_a, guardian_name="X", method="signed_form",
                                evidence_reference="f1", scope=[CHAT], actor=world.staff_b)
    with pytest.raises(ValidationError):  # staff of school B recording for B a child who is not at B
        services.consent_record(student=child, institution=world.school_b, guardian_name="X", method="signed_form",
                                evidence_reference="f1", scope=[CHAT], actor=world.staff_b)
    with pytest.raises(ValidationError):
        services.consent_record(student=child, institution=world.school_a, guardian_name="X", method="signed_form",
                                evidence_reference="", scope=[CHAT], actor=world.staff_a)
    record = consent(world, child, third_party_disclosure=False)
    assert record.recorded_by == world.staff_a and record.scope == sorted([CHAT, TEXT, PersonalInfoFeature.COLLAB])
    assert not record.third_party_disclosure
    assert LogEntry.objects.get_for_object(record).exists()  # audited


@pytest.mark.django_db
def test_staff_record_consent_in_the_admin(client, world):
    child = make_child(world)
    client.force_login(world.staff_a)
    url = reverse("admin:compliance_parentalconsent_add")
    assert client.get(url).status_code == 200
    given = timezone.localtime() - dt.timedelta(hours=1)  # the admin's local date and time, in the past
    response = client.post(url, {
        "institution": world.school_a.pk, "student": child.pk, "guardian_name": "Pat Parent",
        "method": "call", "evidence_reference": "call log 88", "scope": [CHAT], "third_party_disclosure": "",
        "given_at_0": given.date().isoformat(), "given_at_1": given.strftime("%H:%M:%S"),
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    record = ParentalConsent.objects.get(student=child)
    assert record.recorded_by == world.staff_a and record.scope == [CHAT] and record.method == "call"


# --- the page ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_session_page_says_why_chat_is_off(client, world):
    child = make_child(world)
    client.force_login(child)
    page = client.get(reverse("session-room", args=[world.session_a.pk])).content.decode()
    assert 'data-testid="consent-required"' in page and "parent&#x27;s consent" in page
    consent(world, child)
    page = client.get(reverse("session-room", args=[world.session_a.pk])).content.decode()
    assert 'data-testid="consent-required"' not in page
    client.force_login(world.student_a)  # 14: nothing to consent to
    assert 'data-testid="consent-required"' not in client.get(
        reverse("session-room", args=[world.session_a.pk])).content.decode()


# --- the socket ------------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_a_childs_chat_and_written_answers_with_consent_required(world, settings):
    settings.AULA_SOCKET_RECHECK_SECONDS = 1
    child = await database_sync_to_async(make_child)(world)
    await database_sync_to_async(classroom_services.session_start)(session=world.session_a, actor=world.teacher_a)
    teacher, _ = await connect(world.teacher_a, world.session_a)
    kid, snapshot = await connect(child, world.session_a)

    refused = await kid.request("chat.send", body="my address is 1 Elm St")
    assert refused["type"] == "error" and refused["data"]["code"] == "consent_required"
    assert "consent" in refused["data"]["message"] and refused["data"]["details"]["feature"] == "chat"
    assert await database_sync_to_async(ChatMessage.objects.filter(author=child).count)() == 0

    open_poll = await teacher.request("poll.create", question="Your favourite animal?", kind="open")
    choice_poll = await teacher.request("poll.create", question="Ready?", kind="single", options=["yes", "no"])
    written = await kid.request("poll.answer", poll_id=open_poll["data"]["poll_id"], attempt_id=str(uuid.uuid4()),
                                text="a dog")
    assert written["type"] == "error" and written["data"]["code"] == "consent_required"
    chosen = await kid.request("poll.answer", poll_id=choice_poll["data"]["poll_id"], attempt_id=str(uuid.uuid4()),
                               positions=[0])
    assert chosen["type"] == "ack"  # choosing an option collects nothing the child typed

    # Consent recorded while the socket is open: the next re-check drops the kept answer.
    record = await database_sync_to_async(consent)(world, child)
    await asyncio.sleep(2.2)
    sent = await kid.request("chat.send", body="hello class")
    assert sent["type"] == "ack"
    assert (await teacher.next("chat.message"))["data"]["body"] == "hello class"

    # Withdrawn again: refused again within a re-check period, the socket stays open.
    await database_sync_to_async(services.consent_revoke)(consent=record, actor=world.staff_a)
    await asyncio.sleep(2.2)
    again = await kid.request("chat.send", body="still there?")
    assert again["type"] == "error" and again["data"]["code"] == "consent_required"
    await kid.send(type="ping", ref="p1")
    assert (await kid.next("pong"))["data"]["ref"] == "p1"  # refused frames leave the socket open
    await kid.close()
    await teacher.close()


# --- the guardian page ------------------------------------------------------------------------------------------

@pytest.fixture
def guardian(world):
    child = make_child(world)
    parent = factories.user("parent")
    classroom_services.guardianship_link(guardian=parent, student=child, institution=world.school_a)
    for link in Guardianship.objects.filter(guardian=parent):  # one row at a time: bulk writes are refused
        link.verified_at = timezone.now()
        link.save(update_fields=["verified_at"])
    return parent, child


@pytest.mark.django_db
def test_a_verified_guardian_withdraws_consent_and_asks_for_deletion(client, world, guardian):
    parent, child = guardian
    record = consent(world, child)
    client.force_login(parent)
    page = client.get(reverse("guardian-home")).content.decode()
    assert KID_NAME in page and f'data-testid="revoke-{record.pk}"' in page

    assert client.post(reverse("guardian-consent-revoke", args=[record.pk])).status_code == 302
    record.refresh_from_db()
    assert record.revoked_at is not None and record.revoked_by == parent
    assert not coppa.can_collect_personal_info(fresh(child), CHAT)

    assert client.post(reverse("guardian-deletion-ask", args=[child.pk]), {"confirm": "delete"}).status_code == 302
    asked = ChildDataDeletion.objects.get(student=child)
    assert asked.origin == "guardian" and asked.requested_by == parent and asked.completed_at is None
    assert asked.subject_token == services.subject_token(child.pk)
    client.post(reverse("guardian-deletion-ask", args=[child.pk]), {"confirm": "delete"})
    assert ChildDataDeletion.objects.filter(subject_token=asked.subject_token).count() == 1  # one open request
    assert 'data-testid="deletion-pending"' in client.get(reverse("guardian-home")).content.decode()


@pytest.mark.django_db
def test_an_unverified_or_other_guardian_cannot_act(client, world, guardian):
    _, child = guardian
    record = consent(world, child)
    unverified = factories.user("stranger")
    classroom_services.guardianship_link(guardian=unverified, student=child, institution=world.school_a)
    client.force_login(unverified)
    assert KID_NAME not in client.get(reverse("guardian-home")).content.decode()
    assert client.post(reverse("guardian-consent-revoke", args=[record.pk])).status_code == 404
    assert client.post(reverse("guardian-deletion-ask", args=[child.pk]), {"confirm": "delete"}).status_code == 404
    record.refresh_from_db()
    assert record.revoked_at is None and not ChildDataDeletion.objects.exists()


# --- deletion everywhere -------------------------------------------------------------------------------------------

def _child_with_a_history(world) -> tuple[User, dict]:
    """A child who chatted, answered a named and an anonymous written poll, raised a hand, attended, and was
    audited; plus an adult classmate whose data must stay."""
    child = make_child(world)
    consent(world, child)
    session = world.session_a
    classroom_services.session_start(session=session, actor=world.teacher_a)
    classroom_services.chat_message_post(session=session, author=child, body="I live at 1 Elm Street")
    classroom_services.chat_message_post(session=session, author=world.student_a, body="hi everyone")
    named = classroom_services.poll_create(session=session, actor=world.teacher_a, question="Pet?", kind="open",
                                           options=[])
    anonymous = classroom_services.poll_create(session=session, actor=world.teacher_a, question="Worry?",
                                               kind="open", options=[], anonymous=True)
    for poll, text in ((named, "my cat Tom"), (anonymous, "my secret worry")):
        classroom_services.poll_answer(poll_id=poll.pk, user=child, attempt_id=uuid.uuid4(), text=text)
    classroom_services.poll_answer(poll_id=named.pk, user=world.student_a, attempt_id=uuid.uuid4(), text="a fish")
    classroom_services.poll_close(poll=named, actor=world.teacher_a)
    classroom_services.poll_close(poll=anonymous, actor=world.teacher_a)
    classroom_services.hand_raise(session=session, user=child)
    now = timezone.now().timestamp()
    classroom_services.attendance_interval_record(session_id=session.pk, user_id=child.pk, conn_id="c-kid",
                                                  joined_at=now - 60, left_at=now)
    from streaming import services as streaming_services
    streaming_services.channel_upsert(owner=child, slug="kid-tv", title="Zebulon's channel")
    return child, {"named": named, "anonymous": anonymous}


def _everything_that_mentions(child_id: int) -> list[str]:
    found = []
    for event in RoomEvent.objects.all():
        text = json.dumps(event.payload)
        if KID_NAME in text or "Elm Street" in text or "my cat Tom" in text or "secret worry" in text:
            found.append(f"room event {event.type}: {text}")
    for entry in LogEntry.objects.all():
        text = json.dumps([entry.object_repr, entry.changes, entry.changes_text, entry.serialized_data,
                           entry.additional_data, entry.actor_email], default=str)
        if "Zebulon" in text or "Quixote" in text or "kid@example.test" in text:
            found.append(f"audit entry {entry.pk}: {text}")
        if entry.actor_id == child_id:
            found.append(f"audit entry {entry.pk} by the child")
    for session in Session.objects.all():
        if session.get_decoded().get("_auth_user_id") == str(child_id):
            found.append("login session")
    return found


@pytest.mark.django_db(transaction=True)
async def test_deletion_removes_the_child_everywhere_closes_the_socket_and_leaves_a_token(client, world, settings):
    settings.AULA_SOCKET_RECHECK_SECONDS = 1
    child, polls = await database_sync_to_async(_child_with_a_history)(world)
    child_id = child.pk
    kid, _ = await connect(child, world.session_a)  # a live socket, and presence in Redis
    classmate, _ = await connect(world.student_a, world.session_a)
    rt = redis.Redis.from_url(settings.REDIS_REALTIME_URL)
    metas_key = f"{settings.AULA_REDIS_KEY_PREFIX}:pres:{world.session_a.room_key}:metas"
    assert any(json.loads(v)["user_id"] == child_id for v in rt.hvals(metas_key))

    def carry_out_in_the_admin():
        deletion = services.deletion_request(student=child, institution=world.school_a, actor=world.staff_a)
        client.force_login(world.staff_a)
        response = client.post(reverse("admin:compliance_childdatadeletion_changelist"),
                               {"action": "carry_out", "_selected_action": [deletion.pk]})
        assert response.status_code == 302
        return ChildDataDeletion.objects.get(pk=deletion.pk)

    deletion = await database_sync_to_async(carry_out_in_the_admin)()
    assert await wait_closed(kid) == 4401  # the socket re-check closes a socket whose user is gone

    def check_database():
        assert not User.objects.filter(pk=child_id).exists()
        assert not ChatMessage.objects.filter(author_id=child_id).exists()
        assert not PollAnswer.objects.filter(user_id=child_id).exists()
        assert not PollAnswer.objects.filter(poll=polls["anonymous"]).exists()  # found by its keyed hash
        assert not AttendanceInterval.objects.filter(user_id=child_id).exists()
        assert not ParentalConsent.objects.filter(student_id=child_id).exists()
        from streaming.models import Channel
        assert not Channel.objects.filter(slug="kid-tv").exists()  # it protected its owner from deletion
        assert _everything_that_mentions(child_id) == []
        # The classmate's data is untouched, including their answer in the same poll's results.
        assert ChatMessage.objects.filter(author=world.student_a, body="hi everyone").exists()
        results = RoomEvent.objects.filter(type="poll.results", payload__poll_id=polls["named"].pk).get()
        assert results.payload["texts"] == ["a fish"] and results.payload["respondents"] == 2
        # The record: a keyed hash of the id, no name, who did it and what was removed.
        assert deletion.completed_at is not None and deletion.student_id is None
        assert deletion.subject_token == services.subject_token(child_id) and len(deletion.subject_token) == 64
        assert deletion.completed_by == world.staff_a
        assert deletion.removed["classrooms.ChatMessage"] == 1 and deletion.removed["anonymous_poll_answers"] == 1
        assert deletion.removed["login_sessions"] >= 1
        assert "Zebulon" not in json.dumps(deletion.removed)
        # Safe to run twice.
        again = services.child_data_delete(deletion=deletion, actor=world.staff_a)
        assert again.completed_at == deletion.completed_at

    await database_sync_to_async(check_database)()
    assert not any(json.loads(v)["user_id"] == child_id for v in rt.hvals(metas_key))
    assert (await classmate.request("chat.send", body="still here"))["type"] == "ack"
    await classmate.close()
    rt.close()


@pytest.mark.django_db
def test_staff_of_another_school_cannot_carry_out_a_deletion(world):
    from django.core.exceptions import PermissionDenied

    child = make_child(world)
    deletion = services.deletion_request(student=child, institution=world.school_a, actor=world.staff_a)
    with pytest.raises(PermissionDenied):
        services.child_data_delete(deletion=deletion, actor=world.staff_b)
    with pytest.raises(PermissionDenied):
        services.deletion_request(student=child, institution=world.school_a, actor=world.staff_b)
    assert User.objects.filter(pk=child.pk).exists()


# --- retention ---------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_retention_purge_removes_old_child_data_only_and_is_idempotent(world, settings):
    settings.AULA_RETENTION_CHILD_CONTENT_DAYS = 30
    settings.AULA_RETENTION_CHILD_INACTIVE_DAYS = 60
    settings.AULA_RETENTION_DELETION_RECORD_DAYS = 90
    child, polls = _child_with_a_history(world)
    long_ago = timezone.now() - dt.timedelta(days=45)
    # Written 45 days ago: the child's message and answers are past the 30-day content period, and so is
    # the teen's message (kept: 14 is not under 13).
    ChatMessage.objects.update(created_at=long_ago)
    PollAnswer.objects.update(created_at=long_ago)
    with connection.cursor() as cur:  # backdating a fixture: bulk ORM writes on polls are refused (FERPA)
        cur.execute("UPDATE classrooms_poll SET created_at = %s", [long_ago])
    recent = classroom_services.chat_message_post(session=world.session_a, author=child, body="new message")

    # A child who left the school 100 days ago and has not signed in since.
    gone = factories.user("leaver", age=10)
    factories.enroll(world.course_b, gone)
    from classrooms.models import Enrollment, Membership
    Enrollment.objects.filter(user=gone).update(is_active=False)
    Membership.objects.filter(user=gone).update(is_active=False)
    with connection.cursor() as cur:
        cur.execute("UPDATE classrooms_user SET date_joined = %s WHERE id = %s",
                    [timezone.now() - dt.timedelta(days=400), gone.pk])
    # An old tokenised record past its own period.
    old_record = ChildDataDeletion.objects.create(subject_token="f" * 64, origin="school")
    ChildDataDeletion.objects.filter(pk=old_record.pk).update(completed_at=timezone.now() - dt.timedelta(days=91))

    from compliance.coppa.tasks import retention_purge
    first = retention_purge.apply().get()
    assert first["chat_messages"] == 1 and first["poll_answers"] == 1 and first["anonymous_poll_answers"] == 1
    assert first["accounts"] == 1 and first["deletion_records"] == 1
    assert list(ChatMessage.objects.filter(author=child)) == [recent]
    assert ChatMessage.objects.filter(author=world.student_a).exists()
    assert PollAnswer.objects.filter(user=world.student_a).exists()
    assert not PollAnswer.objects.filter(poll=polls["anonymous"]).exists()
    assert User.objects.filter(pk=child.pk).exists()  # still at school: only old content goes
    assert not User.objects.filter(pk=gone.pk).exists()
    record = ChildDataDeletion.objects.get(subject_token=services.subject_token(gone.pk))
    assert record.origin == "retention" and record.completed_at is not None and record.student_id is None
    for event in RoomEvent.objects.filter(type__in=["chat.message", "poll.results"]):
        text = json.dumps(event.payload)
        assert "Elm Street" not in text and "my cat Tom" not in text and "secret worry" not in text

    second = retention_purge.apply().get()
    assert second == {}
    runs = list(RetentionRun.objects.order_by("started_at"))
    assert len(runs) == 2 and runs[0].removed == first and runs[1].removed == {}
    assert runs[0].policy == {"child_content_days": 30, "child_inactive_account_days": 60,
                              "deletion_record_days": 90}


def test_the_purge_is_scheduled_daily_on_the_bulk_queue():
    job = settings.CELERY_BEAT_SCHEDULE["coppa-retention-purge"]
    assert job["task"] == "compliance.coppa.tasks.retention_purge"
    assert job["options"]["queue"] == "bulk" and job["options"]["expires"] > 0
    assert settings.CELERY_TASK_ROUTES[job["task"]] == {"queue": "bulk"}


def test_retention_numbers_come_from_the_environment():
    from tests.config.test_settings import run_django

    result = run_django({"AULA_RETENTION_CHILD_CONTENT_DAYS": "12"}, "shell", "-c",
                        "from django.conf import settings; print(settings.AULA_RETENTION_CHILD_CONTENT_DAYS)")
    assert result.stdout.strip().splitlines()[-1] == "12", result.stderr
    result = run_django({"AULA_RETENTION_CHILD_CONTENT_DAYS": "forever"})
    assert result.returncode != 0 and "AULA_RETENTION_CHILD_CONTENT_DAYS='forever' is not a whole number" in result.stderr



def test_the_token_is_a_keyed_hash(settings):
    import hashlib

    token = services.subject_token(42)
    assert token == services.subject_token(42) and token != services.subject_token(43)
    assert token != hashlib.sha256(b"42").hexdigest() and token != hashlib.sha256(b"aula-user:42").hexdigest()
    settings.AULA_COPPA_TOKEN_KEY = "another-key"
    assert services.subject_token(42) != token  # only the key's holder can match a record to an id
