"""The author's notices page (decisions and sanctions with reasons, appeals) and the reviewers' appeals and item
pages (a different moderator decides an appeal; reversal and lifting a sanction; the item's audit history)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from moderation import content, services
from moderation.models import Appeal, ModerationItem, Sanction, Source
from moderation.pipeline import Context, Verdict
from tests import factories

pytestmark = pytest.mark.django_db


class RecordingAdapter:
    """Stands in for class chat's adapter: remembers what moderation asked of it."""

    def __init__(self):
        self.calls: list[tuple] = []

    def resolve(self, object_id, viewer=None):
        return None

    def approve(self, object_id, actor):
        self.calls.append(("approve", object_id))

    def remove(self, object_id, actor, reason):
        self.calls.append(("remove", object_id))

    def restore(self, object_id, actor, text):
        self.calls.append(("restore", object_id))

    def censor(self, object_id, actor, text):
        self.calls.append(("censor", object_id))

    def restrict(self, *, user_id, ref, scope, until, actor, reason):
        self.calls.append(("restrict", user_id))

    def unrestrict(self, *, user_id, ref, scope, actor):
        self.calls.append(("unrestrict", user_id))

    def notify_author(self, ref, type_, data):
        self.calls.append(("notify", type_))


@pytest.fixture
def adapter():
    before = content._adapters.get(Source.CLASS_CHAT)
    fake = RecordingAdapter()
    content.register(Source.CLASS_CHAT, fake)
    yield fake
    if before is None:
        content._adapters.pop(Source.CLASS_CHAT, None)
    else:
        content.register(Source.CLASS_CHAT, before)


def held(world, object_id: str, text: str, author=None) -> ModerationItem:
    author = author or world.student_a
    ctx = Context(source=Source.CLASS_CHAT, institution_id=world.school_a.pk, course_id=world.course_a.pk,
                  room_id=world.session_a.pk, author_id=author.pk, minors=True)
    verdict = Verdict(text=text, action="hold", category="harassment", severity=70, scores={"harassment": 0.8})
    return services.verdict_record(verdict=verdict, ctx=ctx, object_id=object_id, author_id=author.pk, text=text)


@pytest.fixture
def decided(world, adapter):
    """Three of student A's messages decided by teacher A: removed with a timeout, approved, and warned."""
    timed = held(world, "m1", "you <b>idiot</b>")
    services.item_decide(item_id=timed.pk, actor=world.teacher_a, decision="timeout", minutes=30,
                         note="Name-calling <i>again</i>")
    approved = held(world, "m2", "what a day")
    services.item_decide(item_id=approved.pk, actor=world.teacher_a, decision="approve")
    warned = held(world, "m3", "spam spam spam")
    services.item_decide(item_id=warned.pk, actor=world.teacher_a, decision="warn", note="Please stop posting links")
    other = held(world, "m4", "someone else's", author=world.student_b)
    return timed, approved, warned, other


def test_notices_show_decisions_against_own_content_and_sanctions_with_reasons(client, world, decided):
    timed, approved, warned, other = decided
    expired = Sanction.objects.create(user=world.student_a, kind="timeout", scope="room",
                                      institution=world.school_a, course=world.course_a, reason="Earlier timeout",
                                      issued_by=world.teacher_a, expires_at=timezone.now() - dt.timedelta(hours=1))
    client.force_login(world.student_a)
    page = client.get(reverse("moderation:notices"))
    assert page.status_code == 200
    html = page.content.decode()
    assert [r["item"].pk for r in page.context["rows"]] == [warned.pk, timed.pk]  # newest first; approved not shown
    assert "Name-calling &lt;i&gt;again&lt;/i&gt;" in html and "<i>again</i>" not in html
    assert "you &lt;b&gt;idiot&lt;/b&gt;" in html and "Please stop posting links" in html
    states = {s.pk: state for s, state in page.context["sanctions"]}
    timeout = Sanction.objects.get(item=timed)
    assert states == {timeout.pk: "active", Sanction.objects.get(item=warned).pk: "on record", expired.pk: "expired"}
    assert "Earlier timeout" in html
    assert html.count('data-testid="appeal-form"') == 2

    client.force_login(world.student_b)
    other_page = client.get(reverse("moderation:notices"))
    assert other_page.context["rows"] == [] and "you &lt;b&gt;idiot" not in other_page.content.decode()
    assert client.post(reverse("moderation:notices"), {"item_id": timed.pk, "statement": "x"}).status_code == 404


def test_an_author_appeals_once_and_sees_the_status(client, world, decided):
    timed, approved, _warned, _other = decided
    client.force_login(world.student_a)
    response = client.post(reverse("moderation:notices"), {"item_id": timed.pk, "statement": "It was a joke"})
    assert response.status_code == 302
    appeal = Appeal.objects.get(item=timed)
    assert (appeal.appellant, appeal.statement, appeal.status) == (world.student_a, "It was a joke", "open")
    assert appeal.sanction == Sanction.objects.get(item=timed)
    page = client.get(reverse("moderation:notices")).content.decode()
    assert 'data-testid="appeal-status">Appeal: <strong>Waiting</strong>' in page
    client.post(reverse("moderation:notices"), {"item_id": timed.pk, "statement": "Again"})
    assert Appeal.objects.filter(item=timed).count() == 1
    assert client.post(reverse("moderation:notices"), {"item_id": approved.pk,
                                                       "statement": "x"}).status_code == 404
    assert client.post(reverse("moderation:notices"), {"item_id": timed.pk, "statement": ""}).status_code == 302


def test_the_original_decider_cannot_decide_the_appeal_a_different_moderator_can(client, world, decided, adapter):
    timed, *_ = decided
    appeal = services.appeal_file(item_id=timed.pk, appellant=world.student_a, statement="Not fair")
    client.force_login(world.teacher_a)
    page = client.get(reverse("moderation:manage-appeals"))
    assert page.status_code == 200 and 'data-testid="own-decision"' in page.content.decode()
    assert 'data-testid="decide-appeal"' not in page.content.decode()
    refused = client.post(reverse("moderation:manage-appeals"), {
        "appeal_id": appeal.pk, f"a{appeal.pk}-outcome": "overturn", f"a{appeal.pk}-note": "fine"}, follow=True)
    assert "a different moderator decides this appeal" in refused.content.decode()
    appeal.refresh_from_db()
    assert appeal.status == "open"

    client.force_login(world.staff_b)  # another school's staff: not theirs to see
    assert appeal.pk not in [a.pk for a, _f, _o in client.get(reverse("moderation:manage-appeals"))
                             .context["open_appeals"]]
    assert client.post(reverse("moderation:manage-appeals"), {"appeal_id": appeal.pk}).status_code == 404

    client.force_login(world.staff_a)
    page = client.get(reverse("moderation:manage-appeals"))
    assert 'data-testid="decide-appeal"' in page.content.decode()
    response = client.post(reverse("moderation:manage-appeals"), {
        "appeal_id": appeal.pk, f"a{appeal.pk}-outcome": "overturn", f"a{appeal.pk}-note": "A joke among friends"})
    assert response.status_code == 302
    appeal.refresh_from_db()
    assert (appeal.status, appeal.decided_by, appeal.note) == ("overturned", world.staff_a, "A joke among friends")
    assert Sanction.objects.get(item=timed).revoked_at is not None
    assert ("restore", "m1") in adapter.calls and ("unrestrict", world.student_a.pk) in adapter.calls

    client.force_login(world.student_a)
    notices = client.get(reverse("moderation:notices"))
    row = next(r for r in notices.context["rows"] if r["item"].pk == timed.pk)
    assert row["reversed"] and row["appeal"].status == "overturned"
    assert {s.pk: st for s, st in notices.context["sanctions"]}[Sanction.objects.get(item=timed).pk] == "lifted"


def test_item_page_reverses_lifts_and_shows_the_history(client, world, decided, adapter):
    timed, _approved, warned, _other = decided
    client.force_login(world.student_a)
    assert client.get(reverse("moderation:manage-item", args=[timed.pk])).status_code == 404
    client.force_login(world.staff_b)
    assert client.get(reverse("moderation:manage-item", args=[timed.pk])).status_code == 404

    client.force_login(world.staff_a)
    url = reverse("moderation:manage-item", args=[warned.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert [e.action for e in page.context["history"]] == ["hold", "decide.warn"]
    sanction = Sanction.objects.get(item=warned)
    client.post(url, {"op": "lift", "sanction_id": sanction.pk, "lift-reason": "First time"})
    sanction.refresh_from_db()
    assert sanction.revoked_by == world.staff_a and sanction.revoke_reason == "First time"

    timed_url = reverse("moderation:manage-item", args=[timed.pk])
    no_reason = client.post(timed_url, {"op": "reverse", "reverse-reason": ""})
    assert no_reason.status_code == 200 and not Sanction.objects.get(item=timed).revoked_at
    client.post(timed_url, {"op": "reverse", "reverse-reason": "Misread the context"})
    timed.refresh_from_db()
    assert timed.visible and Sanction.objects.get(item=timed).revoked_at is not None
    history = [e.action for e in client.get(timed_url).context["history"]]
    assert history == ["hold", "decide.timeout", "reverse"]
    html = client.get(timed_url).content.decode()
    assert "you &lt;b&gt;idiot&lt;/b&gt;" in html and "<b>idiot</b>" not in html


def test_admin_lifts_a_sanction_through_the_service_with_a_reason(client, world, decided):
    timed, *_ = decided
    root = factories.user("root", superuser=True)
    client.force_login(root)
    sanction = Sanction.objects.get(item=timed)
    url = reverse("admin:moderation_sanction_changelist")
    ask = client.post(url, {"action": "lift_sanctions", "_selected_action": [sanction.pk]})
    assert ask.status_code == 200 and 'name="reason"' in ask.content.decode()
    done = client.post(url, {"action": "lift_sanctions", "_selected_action": [sanction.pk], "confirm": "yes",
                             "reason": "Lifted by the principal"})
    assert done.status_code == 302
    sanction.refresh_from_db()
    assert sanction.revoked_by == root and sanction.revoke_reason == "Lifted by the principal"
    assert client.get(reverse("admin:moderation_moderationitem_add")).status_code == 403
