"""Moderation end to end inside one process: class and stream sockets, the queue's decisions, sanctions,
reports, escalation and appeals, with the real adapters of each app."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from channels.db import database_sync_to_async
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from classrooms import services as class_services
from classrooms.models import ChatMessage, PollAnswer, Role
from config.realtime.models import RoomEvent
from moderation import audit, patterns, services
from moderation.models import AuditEntry, ModerationItem, PatternList, PatternRule, Sanction, UserReport
from streaming import services as stream_services
from streaming.models import StreamChatBan, StreamChatMessage, StreamQuestion
from tests import factories
from tests.classrooms.test_consumers import connect

HOSTILE = "you are worthless, nobody in this class likes you, just leave"


def pattern(action: str, *terms: str, **scope) -> PatternList:
    pl = PatternList.objects.create(name=f"{action} list", action=action, **scope)
    for term in terms:
        PatternRule.objects.create(pattern_list=pl, kind="term", pattern=term)
    return pl


@pytest.mark.django_db(transaction=True)
async def test_a_held_class_message_reaches_only_its_author_until_a_teacher_approves(world):
    await database_sync_to_async(class_services.session_start)(session=world.session_a, actor=world.teacher_a)
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    ack = await student.request("chat.send", body=HOSTILE)
    assert ack["type"] == "ack" and ack["data"]["status"] == "held" and ack["data"]["seq"] is None
    held = await student.next("chat.held")
    assert held["data"]["body"] == HOSTILE and held["seq"] is None
    notice = await teacher.next("moderation.item")
    assert notice["data"]["reason"] == "held" and notice["data"]["category"] == "harassment"
    assert "body" not in notice["data"]  # the teacher reads it in the queue
    assert not [f for f in teacher.frames if f["type"] == "chat.message"]

    item = await database_sync_to_async(ModerationItem.objects.get)(object_id=str(ack["data"]["id"]))
    assert item.minors and item.priority >= 300 and item.source == "class_chat"
    await database_sync_to_async(services.item_decide)(item_id=item.pk, actor=world.teacher_a, decision="approve",
                                                       version=item.version)
    shown = await teacher.next("chat.message")
    assert shown["data"]["body"] == HOSTILE and shown["seq"] is not None
    assert (await student.next("chat.reviewed"))["data"]["status"] == "visible"
    await teacher.close()
    await student.close()


@pytest.mark.django_db(transaction=True)
async def test_a_blocked_class_message_is_refused_with_an_error_frame_and_never_stored(world):
    await database_sync_to_async(pattern)("block", "forbiddenword", institution=world.school_a)
    student, _ = await connect(world.student_a, world.session_a)
    reply = await student.request("chat.send", body="this has a f0rbiddenw0rd in it")
    assert reply["type"] == "error" and "not sent" in reply["data"]["message"]
    assert await database_sync_to_async(ChatMessage.objects.count)() == 0
    entry = await database_sync_to_async(AuditEntry.objects.get)(action="block")
    assert entry.target_type == "user" and entry.target_id == str(world.student_a.pk) and entry.stage == "patterns"
    again = await student.request("chat.send", body="hello")  # the socket stays open
    assert again["type"] == "ack"
    await student.close()


@pytest.mark.django_db
def test_censored_class_chat_is_shown_masked_and_a_reversal_restores_it(world):
    pattern("censor", "fudge", institution=world.school_a)
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body="oh fudge")
    assert message.body == "oh *****" and message.seq
    item = ModerationItem.objects.get(object_id=str(message.pk))
    assert item.visible and item.text == "oh fudge" and item.reason == "flagged"
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="remove", note="language")
    message.refresh_from_db()
    assert message.deleted_at is not None
    assert not RoomEvent.objects.filter(type="chat.message", payload__body="oh *****").exists()  # scrubbed
    services.decision_reverse(item_id=item.pk, actor=world.staff_a, reason="teacher was too strict")
    message.refresh_from_db()
    assert message.deleted_at is None and message.body == "oh *****"  # back as the pipeline showed it: masked
    with pytest.raises(services.Stale):  # a decision is reversed once
        services.decision_reverse(item_id=item.pk, actor=world.staff_a, reason="again")


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_cannot_decide_one_item_twice(world):
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    other_teacher = factories.user("teacher_a2")
    factories.enroll(world.course_a, other_teacher, Role.TEACHER)
    barrier, results = threading.Barrier(2), []

    def decide(actor, decision):
        try:
            barrier.wait()
            services.item_decide(item_id=item.pk, actor=actor, decision=decision, note="x", version=item.version)
            results.append("ok")
        except services.Stale:
            results.append("stale")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(world.teacher_a, "approve")),
               threading.Thread(target=decide, args=(other_teacher, "remove"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == ["ok", "stale"]
    decisions = AuditEntry.objects.filter(target_id=str(message.pk), action__startswith="decide.")
    assert decisions.count() == 1


@pytest.mark.django_db
def test_a_timeout_stops_a_students_posting_until_it_ends_or_is_lifted(world):
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    with pytest.raises(ValidationError):
        services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="timeout", note="bullying")
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="timeout", minutes=10, note="bullying")
    sanction = Sanction.objects.get(user=world.student_a)
    assert sanction.scope == "room" and sanction.course_id == world.course_a.pk
    with pytest.raises(PermissionDenied, match="restricted your posting until"):
        class_services.chat_message_post(session=world.session_a, author=world.student_a, body="sorry")
    # Another school's class is not affected by a class-scoped timeout.
    other = factories.course(world.school_a, "ART")
    factories.enroll(other, world.student_a)
    class_services.chat_message_post(session=factories.live_session(other), author=world.student_a, body="hi")
    services.sanction_revoke(sanction_id=sanction.pk, actor=world.staff_a, reason="apologised")
    class_services.chat_message_post(session=world.session_a, author=world.student_a, body="sorry")


@pytest.mark.django_db
def test_appeals_are_decided_by_a_different_moderator_and_overturning_reverses(world):
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="ban", note="abuse")
    with pytest.raises(PermissionDenied):
        services.appeal_file(item_id=item.pk, appellant=world.student_b, statement="not mine")
    appeal = services.appeal_file(item_id=item.pk, appellant=world.student_a, statement="I was quoting a book")
    with pytest.raises(PermissionDenied, match="different moderator"):
        services.appeal_decide(appeal_id=appeal.pk, actor=world.teacher_a, overturn=True, note="ok")
    services.appeal_decide(appeal_id=appeal.pk, actor=world.staff_a, overturn=True, note="context checked")
    assert Sanction.objects.get(item=item).revoked_at is not None
    message.refresh_from_db()
    assert message.status == "visible" and message.seq is not None  # the held message went out after all
    ok, bad = audit.verify(f"i{world.school_a.pk}")
    assert ok, bad


@pytest.mark.django_db
def test_reports_join_one_item_and_raise_its_priority(world):
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body="meet me later")
    classmate = factories.user("classmate", age=14)
    factories.enroll(world.course_a, classmate)
    item = services.report_create(reporter=classmate, source="class_chat", object_id=message.pk, reason="creepy")
    again = services.report_create(reporter=world.teacher_a, source="class_chat", object_id=message.pk)
    services.report_create(reporter=classmate, source="class_chat", object_id=message.pk)  # once per person
    item.refresh_from_db()
    assert again.pk == item.pk and item.report_count == 2 and item.reason == "reported"
    assert item.priority > 0 and UserReport.objects.filter(item=item).count() == 2
    with pytest.raises(PermissionDenied):  # another school's student cannot even see it
        services.report_create(reporter=world.student_b, source="class_chat", object_id=message.pk)
    with pytest.raises(ValidationError):
        services.report_create(reporter=world.student_a, source="class_chat", object_id=message.pk)
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="context", note="a history quote")
    assert set(UserReport.objects.values_list("outcome", flat=True)) == {"dismissed"}
    # Acceptable in context: a later report is kept but does not reopen the item.
    late = factories.user("late", age=14)
    factories.enroll(world.course_a, late)
    assert services.report_create(reporter=late, source="class_chat", object_id=message.pk).pk == item.pk
    assert not ModerationItem.objects.exclude(status="decided").exists()


@pytest.fixture
def eager_tasks():
    from config.celery import app as celery_app

    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # the next tier's email is sent in the test
    yield
    celery_app.conf.task_always_eager = eager


@pytest.mark.django_db
def test_an_item_past_its_sla_climbs_the_tiers_and_the_next_tier_is_told(world, eager_tasks,
                                                                         django_capture_on_commit_callbacks):
    world.staff_a.email = "staff_a@example.org"
    world.staff_a.save()
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    assert services.escalate_overdue() == 0  # not due yet
    later = item.due_at + dt.timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.escalate_overdue(now=later) == 1
    assert services.escalate_overdue(now=later) == 0  # safe to run twice
    item.refresh_from_db()
    assert item.tier == 2 and item.due_at > later
    assert [m.to for m in mail.outbox] == [["staff_a@example.org"]] and HOSTILE not in mail.outbox[0].body
    # The teacher no longer has it; the school's staff do; another school's staff never did.
    with pytest.raises(PermissionDenied):
        services.item_claim(item_id=item.pk, actor=world.teacher_a)
    with pytest.raises(PermissionDenied):
        services.item_claim(item_id=item.pk, actor=world.staff_b)
    services.item_claim(item_id=item.pk, actor=world.staff_a)
    assert services.escalate_overdue(now=item.due_at + dt.timedelta(seconds=1)) == 1
    item.refresh_from_db()
    assert item.tier == 3 and item.assigned_to is None and item.status == "open"
    actions = list(AuditEntry.objects.filter(target_id=str(message.pk)).values_list("action", flat=True))
    assert actions == ["hold", "escalate", "claim", "escalate"]


@pytest.mark.django_db
def test_stream_chat_held_by_a_pattern_is_one_queue_with_the_watch_pages_held_list():
    owner = factories.user("creator")
    ch = factories.channel(owner)
    st = factories.stream(ch)
    mod = factories.user("mod")
    factories.channel_role(ch, mod, "moderator")
    viewer = factories.user("viewer")
    pattern("hold", "spoiler", channel=ch)
    message = stream_services.chat_message_post(stream=st, author=viewer, body="SP0ILER: he dies")
    assert message.status == "held"
    item = ModerationItem.objects.get(object_id=str(message.pk), source="stream_chat")
    assert item.channel_id == ch.pk and item.institution_id is None
    stream_services.chat_approve(message=message, actor=mod)  # from the watch page
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.status == "decided" and item.decision == "approve" and item.decided_by == mod
    assert message.status == "visible" and message.cseq
    with pytest.raises(services.Stale):
        services.item_decide(item_id=item.pk, actor=owner, decision="remove", note="x")

    second = stream_services.chat_message_post(stream=st, author=viewer, body="spoiler again")
    item2 = ModerationItem.objects.get(object_id=str(second.pk))
    services.item_decide(item_id=item2.pk, actor=owner, decision="timeout", minutes=5, note="spoilers")
    ban = StreamChatBan.objects.get(channel=ch, user=viewer)
    assert ban.until is not None
    with pytest.raises(PermissionDenied):
        stream_services.chat_message_post(stream=st, author=viewer, body="hello")
    services.sanction_revoke(sanction_id=Sanction.objects.get(item=item2).pk, actor=owner, reason="ok")
    assert not StreamChatBan.objects.filter(channel=ch, user=viewer).exists()


@pytest.mark.django_db
def test_stream_chat_held_by_the_hold_all_setting_is_queued_too():
    ch = factories.channel()
    st = factories.stream(ch)
    stream_services.chat_settings_set(stream=st, actor=ch.owner, hold_all=True)
    message = stream_services.chat_message_post(stream=st, author=factories.user(), body="hello there")
    item = ModerationItem.objects.get(object_id=str(message.pk))
    assert item.category == "room_rule" and item.reason == "held"
    stream_services.chat_reject(message=message, actor=ch.owner)
    item.refresh_from_db()
    assert item.decision == "remove" and StreamChatMessage.objects.get(pk=message.pk).status == "rejected"


@pytest.mark.django_db
def test_a_held_question_stays_off_the_board_until_approved():
    ch = factories.channel()
    st = factories.stream(ch)
    pattern("hold", "spoiler", channel=ch)
    question = stream_services.question_ask(stream=st, author=factories.user(), body="any spoiler for ep 5?")
    assert question.status == StreamQuestion.Status.HELD
    from streaming import selectors as stream_selectors

    assert stream_selectors.questions_board(st) == []
    item = ModerationItem.objects.get(source="stream_question", object_id=str(question.pk))
    services.item_decide(item_id=item.pk, actor=ch.owner, decision="approve")
    assert [q.pk for q in stream_selectors.questions_board(st)] == [question.pk]


@pytest.mark.django_db
def test_open_text_poll_answers_are_screened_and_held_text_is_hidden_from_results(world):
    import uuid

    from classrooms import selectors as class_selectors

    pattern("hold", "spoiler", institution=world.school_a)
    poll = class_services.poll_create(session=world.session_a, actor=world.teacher_a, question="Thoughts?",
                                      kind="open", options=[])
    answer, created = class_services.poll_answer(poll_id=poll.pk, user=world.student_a, attempt_id=uuid.uuid4(),
                                                 text="spoiler: the ending")
    assert created and PollAnswer.objects.get(pk=answer.pk).text_hidden
    assert class_selectors.poll_tally(poll)[2] == []
    item = ModerationItem.objects.get(source="poll_text")
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="approve")
    assert class_selectors.poll_tally(poll)[2] == ["spoiler: the ending"]


@pytest.mark.django_db
def test_anonymous_poll_text_is_hidden_and_audited_without_naming_its_author(world):
    import uuid

    pattern("hold", "spoiler", institution=world.school_a)
    poll = class_services.poll_create(session=world.session_a, actor=world.teacher_a, question="Anon?",
                                      kind="open", options=[], anonymous=True)
    answer, _ = class_services.poll_answer(poll_id=poll.pk, user=world.student_a, attempt_id=uuid.uuid4(),
                                           text="spoiler alert")
    assert PollAnswer.objects.get(pk=answer.pk).text_hidden
    assert not ModerationItem.objects.exists()
    entry = AuditEntry.objects.get(target_type="poll_text")
    assert entry.data["author"] is None


@pytest.mark.django_db
def test_display_names_are_screened(world):
    pattern("block", "idiot")
    with pytest.raises(ValidationError, match="not allowed"):
        class_services.display_name_set(user=world.student_a, name="Big 1d10t")
    user = class_services.display_name_set(user=world.student_a, name="  Ada   L.  ")
    assert user.display_name == "Ada L."


@pytest.mark.django_db
def test_the_audit_trail_is_append_only_and_tamper_evident(world):
    from django.db import transaction

    class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    entry = AuditEntry.objects.get(action="hold")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(reason="nothing happened")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()
    # Someone with the power to drop the trigger edits an entry: the chain shows where.
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE moderation_auditentry DISABLE TRIGGER USER")
        cur.execute("UPDATE moderation_auditentry SET category = 'spam' WHERE id = %s", [entry.pk])
        cur.execute("ALTER TABLE moderation_auditentry ENABLE TRIGGER USER")
    assert audit.verify(entry.ledger) == (False, entry.index)


@pytest.mark.django_db
def test_transparency_summary_counts_by_action_and_category(world):
    class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    pattern("block", "forbiddenword")
    patterns.forget_cache()  # lists are cached per process for a few seconds
    with pytest.raises(ValidationError):
        class_services.chat_message_post(session=world.session_a, author=world.student_a, body="forbiddenword")
    now = timezone.now()
    summary = audit.transparency_summary(AuditEntry.objects.all(), now - dt.timedelta(hours=1),
                                         now + dt.timedelta(hours=1))
    assert summary["by_action"] == {"block": 1, "hold": 1}
    assert summary["by_category"] == {"harassment": 1, "pattern": 1}


@pytest.mark.django_db(transaction=True)
async def test_a_student_reports_a_classmates_message_over_the_socket(world):
    classmate = await database_sync_to_async(factories.user)("classmate2", age=14)
    await database_sync_to_async(factories.enroll)(world.course_a, classmate)
    author, _ = await connect(world.student_a, world.session_a)
    reporter, _ = await connect(classmate, world.session_a)
    sent = await author.request("chat.send", body="thanks for sharing the notes")
    assert sent["data"]["status"] == "visible"
    ack = await reporter.request("chat.report", message_id=sent["data"]["id"], reason="it felt threatening")
    assert ack["type"] == "ack", ack["data"]
    own = await author.request("chat.report", message_id=sent["data"]["id"])
    assert own["type"] == "error"  # not your own message
    missing = await reporter.request("chat.report", message_id=999999)
    assert missing["type"] == "error"
    bad = await reporter.request("chat.report", message_id="x")
    assert bad["type"] == "error"
    item = await database_sync_to_async(ModerationItem.objects.get)(object_id=str(sent["data"]["id"]))
    assert item.reason == "reported" and item.report_count == 1
    await author.close()
    await reporter.close()


@pytest.mark.django_db
def test_an_item_can_be_assigned_to_a_colleague_who_may_review_it(world):
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    colleague = factories.user("teacher_a3")
    factories.enroll(world.course_a, colleague, Role.TEACHER)
    with pytest.raises(ValidationError):  # another school's staff cannot review it: not assignable
        services.item_assign(item_id=item.pk, actor=world.teacher_a, assignee_email=world.staff_b.email)
    item = services.item_assign(item_id=item.pk, actor=world.teacher_a, assignee_email=colleague.email.upper(),
                                version=item.version)
    assert item.status == "claimed" and item.assigned_to == colleague
    with pytest.raises(services.Stale):  # now it is theirs
        services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="approve")
    services.item_decide(item_id=item.pk, actor=colleague, decision="approve")


@pytest.mark.django_db
def test_no_one_reviews_their_own_content_and_approval_never_undeletes(world):
    ta = factories.user("ta_a")
    factories.enroll(world.course_a, ta, Role.TA)
    message = class_services.chat_message_post(session=world.session_a, author=ta, body=HOSTILE)
    item = ModerationItem.objects.get(object_id=str(message.pk))
    with pytest.raises(PermissionDenied, match="your own"):
        services.item_decide(item_id=item.pk, actor=ta, decision="approve")
    # A teacher deleted the held message from the class (chat.clear); approving it later brings nothing back.
    class_services.chat_clear(session=world.session_a, actor=world.teacher_a, reason="fresh start")
    services.item_decide(item_id=item.pk, actor=world.teacher_a, decision="approve")
    message.refresh_from_db()
    assert message.deleted_at is not None and message.seq is None
