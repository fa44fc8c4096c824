"""The review queue page and its actions over HTTP: scope (404 outside it), paging with a fixed query budget,
inert user text, stale versions (409 / a flash message), and two moderators never deciding one item twice."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from moderation import content, services
from moderation.models import AuditEntry, Category, ModerationItem, Source
from moderation.pipeline import Context, Verdict
from tests import factories

EVIL = '<script>alert(1)</script><img src=x onerror=alert(2)> \u202eevil\u202c'


class RecordingAdapter:
    """A content adapter for tests: remembers what moderation asked it to do."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def _record(self, *args):
        with self.lock:
            self.calls.append(args)

    def resolve(self, object_id, viewer=None):
        return None

    def approve(self, object_id, actor):
        self._record("approve", object_id)

    def remove(self, object_id, actor, reason):
        self._record("remove", object_id)

    def restore(self, object_id, actor, text=""):
        self._record("restore", object_id)

    def censor(self, object_id, actor, text):
        self._record("censor", object_id)

    def restrict(self, **kwargs):
        self._record("restrict", kwargs["user_id"])

    def unrestrict(self, **kwargs):
        self._record("unrestrict", kwargs["user_id"])

    def notify_author(self, ref, type_, data):
        self._record("notify", ref.object_id, type_)


@pytest.fixture
def adapter():
    recording = RecordingAdapter()
    previous = content._adapters.get(Source.CLASS_CHAT)
    content.register(Source.CLASS_CHAT, recording)
    yield recording
    if previous is None:
        content._adapters.pop(Source.CLASS_CHAT, None)
    else:
        content.register(Source.CLASS_CHAT, previous)


_ids = iter(range(10_000_000, 20_000_000))


def held(course, author, text="some rude words", *, severity=50, category=Category.HARASSMENT) -> ModerationItem:
    """A held class chat message, queued through the pipeline's write path."""
    ctx = Context(source=Source.CLASS_CHAT, institution_id=course.institution_id, course_id=course.pk, room_id=1,
                  author_id=author.pk)
    verdict = Verdict(text=text, action="hold", category=category, severity=severity,
                      scores={category: severity / 100})
    return services.verdict_record(verdict=verdict, ctx=ctx, object_id=next(_ids), author_id=author.pk, text=text)


def queue_url(**params) -> str:
    url = reverse("moderation:queue")
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def item_url(item, action: str = "") -> str:
    return reverse(f"moderation:queue-{action}" if action else "moderation:queue-item", args=[item.pk])


def login(client, user):
    client.force_login(user)
    return client


# --- the page -------------------------------------------------------------------------------------------------

def test_the_page_is_for_reviewers_only(client, world, adapter):
    assert client.get(queue_url()).status_code == 302  # signed out: to the login page
    login(client, world.student_a)
    assert client.get(queue_url()).status_code == 404
    login(client, world.outsider)
    assert client.get(queue_url()).status_code == 404
    login(client, world.teacher_a)
    assert client.get(queue_url()).status_code == 200


def test_rows_show_everything_a_reviewer_needs_and_user_text_is_inert(client, world, adapter):
    item = held(world.course_a, world.student_a, EVIL, severity=80)
    world.student_a.display_name = "<b>\u202eNamé</b>"
    world.student_a.save(update_fields=["display_name"])
    page = login(client, world.teacher_a).get(queue_url())
    html = page.content.decode()
    assert page.status_code == 200
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<bdi dir="auto">&lt;script&gt;' in html  # the text is isolated (RTL overrides stay inside)
    assert "<bdi data-testid=\"row-author\">&lt;b&gt;\u202eNamé&lt;/b&gt;</bdi>" in html
    row = page.context["row_contexts"][0]
    assert row["item"].pk == item.pk
    for label in ("Class chat", "Harassment", "Tier <strong data-testid=\"row-tier\">1", "0 reports", "SLA",
                  "harassment</bdi> 0.80", 'data-testid="claim"', 'name="csrfmiddlewaretoken"'):
        assert label in html, label
    assert 'value="context"' in html  # class content: "acceptable in educational context" is offered
    assert page.context["counts"] == {"open": 1, "claimed": 0, "total": 1}


def test_classifier_banner_shows_when_the_breaker_is_open(client, world, adapter, monkeypatch):
    from moderation import pipeline

    monkeypatch.setattr(pipeline, "classifier_health",
                        lambda: {"state": "open", "since": 1.0, "skipped": 7, "timeouts": 3, "errors": 4})
    html = login(client, world.teacher_a).get(queue_url()).content.decode()
    assert "Classifier unavailable — messages are screened by pattern lists only" in html
    assert "7 skipped" in html and "3 timed out" in html and "4 errors" in html
    monkeypatch.setattr(pipeline, "classifier_health", lambda: {"state": "closed", "skipped": 0})
    assert "Classifier unavailable" not in login(client, world.teacher_a).get(queue_url()).content.decode()


def test_filter_by_source_category_and_tier(client, world, adapter):
    a = held(world.course_a, world.student_a, "one", category=Category.HARASSMENT)
    b = held(world.course_a, world.student_a, "two", category=Category.SPAM)
    login(client, world.staff_a)
    ids = lambda r: [row["item"].pk for row in r.context["row_contexts"]]  # noqa: E731
    assert set(ids(client.get(queue_url()))) == {a.pk, b.pk}
    assert ids(client.get(queue_url(category="spam"))) == [b.pk]
    assert ids(client.get(queue_url(source="stream_chat"))) == []
    assert set(ids(client.get(queue_url(tier=1, category="nonsense")))) == {a.pk, b.pk}  # unknown values ignored
    page = client.get(queue_url(category="spam"))
    assert page.context["counts"]["total"] == 2 and page.context["matching"] == 1


def test_fragment_is_html_or_json_and_404_outside_scope(client, world, adapter):
    mine = held(world.course_a, world.student_a)
    theirs = held(world.course_b, world.student_b)
    login(client, world.staff_a)
    fragment = client.get(item_url(mine))
    assert fragment.status_code == 200 and f'data-item-id="{mine.pk}"' in fragment.content.decode()
    data = client.get(item_url(mine) + "?format=json&category=spam").json()
    assert data["id"] == mine.pk and data["status"] == "open" and not data["in_filter"]
    assert data["counts"] == {"open": 1, "claimed": 0, "total": 1}
    assert client.get(item_url(mine) + "?format=json").json()["in_filter"]
    # Cross-school: school A's staff cannot read or act on school B's item (404, the same as no such item).
    assert client.get(item_url(theirs)).status_code == 404
    assert client.get(item_url(theirs) + "?format=json").status_code == 404
    for action, extra in (("claim", {}), ("release", {}), ("escalate", {}),
                          ("decide", {"decision": "approve"})):
        r = client.post(item_url(theirs, action), {"version": theirs.version, **extra},
                        HTTP_ACCEPT="application/json")
        assert r.status_code == 404, action
        assert client.post(item_url(theirs, action), {"version": theirs.version, **extra}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "open" and theirs.version == 1
    assert client.get(reverse("moderation:queue-item", args=[999_999])).status_code == 404


# --- actions -----------------------------------------------------------------------------------------------

def test_claim_release_decide_without_javascript_flash_and_redirect(client, world, adapter):
    item = held(world.course_a, world.student_a)
    login(client, world.teacher_a)
    r = client.post(item_url(item, "claim"), {"version": 1, "next": queue_url(page=1)}, follow=True)
    assert r.redirect_chain[-1][0] == queue_url(page=1)
    assert f"Item {item.pk} claimed." in r.content.decode() and "Claimed by you" in r.content.decode()
    r = client.post(item_url(item, "release"), {"version": 2, "next": "https://evil.example/"})
    assert r.status_code == 302 and r["Location"] == queue_url()  # no open redirect
    # An old version (from before the release) is stale: a flash message, and nothing changes.
    r = client.post(item_url(item, "decide"), {"version": 2, "decision": "approve"}, follow=True)
    assert "changed since you loaded it" in r.content.decode()
    r = client.post(item_url(item, "decide"), {"version": 3, "decision": "remove"}, follow=True)
    assert "Give a reason" in r.content.decode()
    r = client.post(item_url(item, "decide"), {"version": 3, "decision": "remove", "note": "rude"}, follow=True)
    assert f"Item {item.pk} decided: remove." in r.content.decode()
    item.refresh_from_db()
    assert item.status == "decided" and item.decision == "remove" and item.decided_by_id == world.teacher_a.pk
    assert ("remove", item.object_id) in adapter.calls
    assert r.context["counts"]["total"] == 0


def test_json_actions_answer_409_when_stale_and_decisions_with_sanctions(client, world, adapter):
    item = held(world.course_a, world.student_a)
    other = held(world.course_a, world.student_a, "other")
    second = factories.user("teacher_two")
    factories.enroll(world.course_a, second, "teacher")
    login(client, world.teacher_a)
    ok = client.post(item_url(item, "claim"), {"version": 1}, HTTP_ACCEPT="application/json")
    assert ok.status_code == 200 and ok.json() == {"ok": True, "id": item.pk, "version": 2, "status": "claimed"}
    # The other teacher's page still shows version 1: their claim and decision are refused, and the row they
    # re-read says who has it.
    login(client, second)
    for action, extra in (("claim", {}), ("decide", {"decision": "approve"}), ("escalate", {})):
        r = client.post(item_url(item, action), {"version": 1, **extra}, HTTP_ACCEPT="application/json")
        assert r.status_code == 409 and r.json()["error"] == "stale", action
    row = client.get(item_url(item) + "?format=json").json()
    assert row["status"] == "claimed" and "Claimed by <bdi" in row["html"] and 'data-testid="decide"' not in row["html"]
    r = client.post(item_url(other, "decide"), {"version": 1, "decision": "timeout", "note": "calm down"},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and "duration" in r.json()["message"]
    school_wide = {"version": 1, "decision": "timeout", "note": "calm down", "minutes": "15", "scope": "institution"}
    r = client.post(item_url(other, "decide"), school_wide, HTTP_ACCEPT="application/json")
    assert r.status_code == 403 and "staff" in r.json()["message"]  # a teacher's sanction stays in the class
    r = client.post(item_url(other, "decide"), {**school_wide, "scope": "room"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and r.json()["status"] == "decided"
    other.refresh_from_db()
    sanction = other.sanctions.get()
    assert sanction.kind == "timeout" and sanction.scope == "room"
    assert dt.timedelta(minutes=14) < sanction.expires_at - timezone.now() <= dt.timedelta(minutes=15)


def test_escalation_moves_an_item_out_of_a_teachers_queue(client, world, adapter):
    item = held(world.course_a, world.student_a)
    login(client, world.teacher_a)
    r = client.post(item_url(item, "escalate"), {"version": 1, "reason": "needs the school"},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    assert client.get(item_url(item) + "?format=json").status_code == 404  # tier 2: the school's now
    assert login(client, world.staff_a).get(item_url(item) + "?format=json").json()["status"] == "open"


def test_context_decision_is_offered_for_class_items_only(client, world, adapter):
    item = held(world.course_a, world.student_a)
    creator, mod = factories.user(), factories.user()
    ch = factories.channel(owner=creator)
    stream_item = ModerationItem.objects.create(
        channel=ch, source=Source.STREAM_CHAT, object_id="s1", author=mod, text="hi", category=Category.SPAM,
        reason="held", due_at=timezone.now() + dt.timedelta(minutes=5))
    assert 'value="context"' in login(client, world.teacher_a).get(item_url(item)).content.decode()
    html = login(client, creator).get(item_url(stream_item)).content.decode()
    assert 'value="context"' not in html and 'value="channel"' in html


# --- a flood -----------------------------------------------------------------------------------------------

def _flood(course, author, n: int) -> list[int]:
    now = timezone.now()
    items = [ModerationItem(institution_id=course.institution_id, course_id=course.pk, source=Source.CLASS_CHAT,
                            object_id=f"flood-{i}", author=author, text=f"message {i}", category=Category.SPAM,
                            reason="held", severity=i % 100, priority=i % 100, due_at=now + dt.timedelta(minutes=15))
             for i in range(n)]
    return [item.pk for item in ModerationItem.objects.bulk_create(items)]


def test_a_thousand_held_items_page_fast_with_a_fixed_query_budget(client, world, adapter, settings,
                                                                   django_assert_max_num_queries):
    settings.AULA_MODERATION_PAGE_SIZE = 25
    _flood(world.course_a, world.student_a, 1000)
    login(client, world.staff_a)
    client.get(queue_url())  # warm caches (content types, permissions) as a running server has them
    # The signed-in user, their permissions (2), is_reviewer's existence checks (2 for staff, ≤ 5), ONE
    # aggregate for every count and ONE query for the page's rows, and the FERPA access entries for the rows
    # shown (one lookup, one bulk insert): 9 for staff, whatever the queue's length.
    with django_assert_max_num_queries(10):
        first = client.get(queue_url())
    assert [row["item"].priority for row in first.context["row_contexts"]] == [99] * 10 + [98] * 10 + [97] * 5
    with django_assert_max_num_queries(10):
        page = client.get(queue_url(page=3))
    assert page.status_code == 200
    assert page.context["counts"] == {"open": 1000, "claimed": 0, "total": 1000}
    assert page.context["pages"] == 40 and page.context["page"] == 3 and len(page.context["row_contexts"]) == 25
    priorities = [row["item"].priority for row in page.context["row_contexts"]]
    assert priorities == sorted(priorities, reverse=True)
    with django_assert_max_num_queries(10):
        assert client.get(queue_url(page=999)).context["page"] == 40  # past the end: the last page


@pytest.mark.django_db(transaction=True)
def test_two_moderators_deciding_concurrently_never_decide_one_item_twice(adapter):
    world = factories.World()
    second = factories.user("teacher_two")
    factories.enroll(world.course_a, second, "teacher")
    ids = _flood(world.course_a, world.student_a, 1000)[:120]
    outcomes: dict[str, list] = {"won": [], "stale": [], "other": []}
    lock = threading.Lock()
    start = threading.Barrier(2)

    def moderate(actor, order):
        try:
            start.wait()
            for item_id in order:
                try:
                    services.item_decide(item_id=item_id, actor=actor, decision="approve", version=1)
                    outcome = "won"
                except services.Stale:
                    outcome = "stale"
                except Exception as exc:  # noqa: BLE001
                    outcome = "other"
                    item_id = (item_id, repr(exc))
                with lock:
                    outcomes[outcome].append(item_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=moderate, args=(world.teacher_a, ids)),
               threading.Thread(target=moderate, args=(second, list(reversed(ids))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes["other"] == []
    assert sorted(outcomes["won"]) == sorted(ids)  # every item decided exactly once: nothing lost
    assert sorted(outcomes["stale"]) == sorted(ids)  # and the other moderator was told, every time
    decided = ModerationItem.objects.filter(pk__in=ids)
    assert decided.filter(status="decided", version=2).count() == len(ids)
    audit = AuditEntry.objects.filter(action="decide.approve")
    assert audit.count() == len(ids) and len({e.data["item"] for e in audit}) == len(ids)
    assert sorted(c[1] for c in adapter.calls if c[0] == "approve") == sorted(f"flood-{i}" for i in range(120))
    assert ModerationItem.objects.filter(status="open").count() == 880
