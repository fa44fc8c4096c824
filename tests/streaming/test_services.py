"""Stream services and selectors against the real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from config.realtime.models import RoomEvent
from streaming import selectors, services
from streaming.models import ChannelRole, Follow, Stream, StreamChatMessage
from streaming.realtime import stream_room
from streaming.selectors import ViewerRole
from streaming.signals import stream_ended, stream_went_live
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cast():
    creator, mod, member, viewer, site_staff = (factories.user() for _ in range(5))
    site_staff.is_staff = True
    site_staff.save()
    ch = factories.channel(owner=creator)
    factories.channel_role(ch, mod, ChannelRole.Kind.MODERATOR)
    factories.channel_role(ch, member, ChannelRole.Kind.MEMBER)
    return {"creator": creator, "mod": mod, "member": member, "viewer": viewer, "site_staff": site_staff,
            "channel": ch, "stream": factories.stream(ch)}


def test_roles(cast):
    from django.contrib.auth.models import AnonymousUser

    s = cast["stream"]
    assert selectors.viewer_role(AnonymousUser(), s) == ViewerRole.ANONYMOUS
    assert selectors.viewer_role(cast["viewer"], s) == ViewerRole.VIEWER
    assert selectors.viewer_role(cast["member"], s) == ViewerRole.MEMBER
    assert selectors.viewer_role(cast["mod"], s) == ViewerRole.MODERATOR
    assert selectors.viewer_role(cast["creator"], s) == ViewerRole.CREATOR
    assert not selectors.can_moderate(cast["site_staff"], s)  # site staff are not implicitly moderators


def test_lifecycle_transitions_broadcast_and_signal(cast):
    sent = []
    stream_went_live.connect(lambda **kw: sent.append(("live", kw["stream"].pk)), weak=False, dispatch_uid="t1")
    stream_ended.connect(lambda **kw: sent.append(("ended", kw["stream"].pk)), weak=False, dispatch_uid="t2")
    try:
        s = factories.stream(cast["channel"], live=False)
        services.stream_schedule(stream=s, actor=cast["mod"], scheduled_start=timezone.now() + dt.timedelta(hours=1))
        with pytest.raises(PermissionDenied):
            services.stream_go_live(stream=s, actor=cast["viewer"])
        services.stream_go_live(stream=s, actor=cast["creator"])
        with pytest.raises(services.Conflict):
            services.stream_go_live(stream=s, actor=cast["creator"])
        s = services.stream_end(stream=s, actor=cast["mod"], recording_url="https://video.example/rec/1")
        assert s.status == Stream.Status.ENDED and s.recording_url == "https://video.example/rec/1"
        with pytest.raises(services.Conflict):
            services.stream_end(stream=s, actor=cast["mod"])
        statuses = [e.payload["status"] for e in RoomEvent.objects.filter(room_key=stream_room(s.pk),
                                                                           type="stream.status").order_by("seq")]
        assert statuses == ["scheduled", "live", "ended"]
        assert ("live", s.pk) in sent and ("ended", s.pk) in sent
    finally:
        stream_went_live.disconnect(dispatch_uid="t1")
        stream_ended.disconnect(dispatch_uid="t2")


def test_chat_post_is_idempotent_screened_and_ordered(cast):
    s = cast["stream"]
    a = services.chat_message_post(stream=s, author=cast["viewer"], body="what a great goal!", client_ref="r1")
    again = services.chat_message_post(stream=s, author=cast["viewer"], body="what a great goal!", client_ref="r1")
    b = services.chat_message_post(stream=s, author=cast["member"], body="hello")
    assert a.pk == again.pk and a.cseq == 1 and b.cseq == 2
    assert a.sentiment > 0.3  # VADER, stored on the message
    assert StreamChatMessage.objects.filter(stream=s).count() == 2


def test_every_chat_setting_is_enforced(cast):
    s, viewer, member, mod = cast["stream"], cast["viewer"], cast["member"], cast["mod"]
    services.chat_settings_set(stream=s, actor=mod, members_only=True)
    with pytest.raises(PermissionDenied):
        services.chat_message_post(stream=s, author=viewer, body="hi")
    services.chat_message_post(stream=s, author=member, body="hi")
    services.chat_settings_set(stream=s, actor=mod, members_only=False, followers_only=True, follow_minutes=10)
    with pytest.raises(PermissionDenied):
        services.chat_message_post(stream=s, author=viewer, body="hi")  # not a follower
    follow = Follow.objects.create(channel=cast["channel"], user=viewer)
    with pytest.raises(PermissionDenied):
        services.chat_message_post(stream=s, author=viewer, body="hi")  # followed too recently
    Follow.objects.filter(pk=follow.pk).update(created_at=timezone.now() - dt.timedelta(minutes=11))
    services.chat_message_post(stream=s, author=viewer, body="hi")
    services.chat_settings_set(stream=s, actor=mod, followers_only=False, emote_only=True)
    with pytest.raises(ValidationError):
        services.chat_message_post(stream=s, author=viewer, body="words")
    services.chat_message_post(stream=s, author=viewer, body="🔥🔥 :clap:")
    services.chat_message_post(stream=s, author=mod, body="mods may type words")
    services.chat_settings_set(stream=s, actor=mod, emote_only=False, slow_seconds=30)
    services.chat_message_post(stream=s, author=viewer, body="one")
    with pytest.raises(services.SlowMode) as slow:
        services.chat_message_post(stream=s, author=viewer, body="two")
    assert 0 < slow.value.retry_after <= 30
    services.chat_message_post(stream=s, author=member, body="slow mode is per person")
    with pytest.raises(PermissionDenied):
        services.chat_settings_set(stream=s, actor=viewer, slow_seconds=0)


def test_lockdown_holds_and_approve_gives_a_new_cseq(cast):
    s, member, mod = cast["stream"], cast["member"], cast["mod"]
    services.chat_message_post(stream=s, author=mod, body="before")
    s = services.chat_lockdown(stream=s, actor=mod, on=True)
    assert s.chat_members_only and s.chat_hold_all and s.chat_slow_seconds >= 30
    held = services.chat_message_post(stream=s, author=member, body="let me in")
    assert held.status == StreamChatMessage.Status.HELD and held.cseq is None
    assert [m.pk for m in selectors.chat_held_queue(s)] == [held.pk]
    assert held.pk not in [m.pk for m in selectors.chat_recent(s)]
    approved = services.chat_approve(message=held, actor=mod)
    assert approved.status == StreamChatMessage.Status.VISIBLE and approved.cseq == 2
    assert [m.body for m in selectors.chat_recent(s)] == ["before", "let me in"]
    s = services.chat_lockdown(stream=s, actor=mod, on=False)
    assert not (s.chat_members_only or s.chat_hold_all or s.chat_lockdown)


def test_lifting_lockdown_restores_the_settings_in_force_before(cast):
    s, member, viewer, mod = cast["stream"], cast["member"], cast["viewer"], cast["mod"]
    s = services.chat_settings_set(stream=s, actor=mod, slow_seconds=10, members_only=True, emote_only=True)
    s = services.chat_lockdown(stream=s, actor=mod, on=True)
    assert (s.chat_slow_seconds, s.chat_members_only, s.chat_hold_all) == (30, True, True)
    s = services.chat_lockdown(stream=s, actor=mod, on=True)  # a second click keeps what was saved first
    # In lockdown a non-member is held for review instead of being refused; a member is held too.
    held = services.chat_message_post(stream=s, author=viewer, body="\U0001f525")
    assert held.status == StreamChatMessage.Status.HELD and held.cseq is None
    assert services.chat_message_post(stream=s, author=member, body="\U0001f44f").status == StreamChatMessage.Status.HELD
    s = services.chat_settings_set(stream=s, actor=mod, emote_only=False)  # a change lockdown did not make
    s = services.chat_lockdown(stream=s, actor=mod, on=False)
    s.refresh_from_db()
    assert not s.chat_lockdown and not s.chat_hold_all
    assert (s.chat_slow_seconds, s.chat_members_only, s.chat_emote_only) == (10, True, False)
    with pytest.raises(PermissionDenied):  # members only again: a non-member is refused, not held
        services.chat_message_post(stream=s, author=viewer, body="hello again")
    # Lockdown on a stream with nothing set puts everything back off.
    s = services.chat_settings_set(stream=s, actor=mod, slow_seconds=0, members_only=False)
    s = services.chat_lockdown(stream=services.chat_lockdown(stream=s, actor=mod, on=True), actor=mod, on=False)
    assert (s.chat_slow_seconds, s.chat_members_only, s.chat_hold_all, s.chat_lockdown) == (0, False, False, False)
    assert [e["type"] for e in RoomEvent.objects.filter(room_key=stream_room(s.pk)).values("type")].count(
        "chat.settings") == 7


def test_reject_delete_timeout_and_ban(cast):
    s, viewer, mod = cast["stream"], cast["viewer"], cast["mod"]
    services.chat_settings_set(stream=s, actor=mod, hold_all=True)
    held = services.chat_message_post(stream=s, author=viewer, body="spam")
    services.chat_reject(message=held, actor=mod)
    services.chat_settings_set(stream=s, actor=mod, hold_all=False)
    m = services.chat_message_post(stream=s, author=viewer, body="rude words")
    services.chat_message_delete(message=m, actor=mod)
    assert selectors.chat_recent(s)[0].deleted_at is not None
    from streaming import events

    assert events.chat_message(selectors.chat_recent(s)[0])["body"] == ""  # blanked for everyone
    services.chat_user_restrict(stream=s, actor=mod, user=viewer, minutes=5)
    with pytest.raises(PermissionDenied):
        services.chat_message_post(stream=s, author=viewer, body="again")
    services.chat_user_unrestrict(stream=s, actor=mod, user=viewer)
    services.chat_message_post(stream=s, author=viewer, body="sorry")
    with pytest.raises(PermissionDenied):
        services.chat_user_restrict(stream=s, actor=mod, user=cast["creator"], minutes=None)


def test_polls_vote_once_and_questions_by_upvotes(cast):
    s, viewer, member, mod = cast["stream"], cast["viewer"], cast["member"], cast["mod"]
    poll = services.poll_open(stream=s, actor=mod, question="Best half?", options=["first", "second"])
    _, created = services.poll_vote(poll_id=poll.pk, stream=s, user=viewer, choice=1)
    _, again = services.poll_vote(poll_id=poll.pk, stream=s, user=viewer, choice=0)
    services.poll_vote(poll_id=poll.pk, stream=s, user=member, choice=1)
    assert created and not again and selectors.poll_counts(poll) == [0, 2]
    services.poll_close(poll=poll, actor=mod)
    with pytest.raises(services.Conflict):
        services.poll_vote(poll_id=poll.pk, stream=s, user=mod, choice=0)
    q1 = services.question_ask(stream=s, author=viewer, body="When is the next stream?")
    q2 = services.question_ask(stream=s, author=member, body="Which camera is that?")
    services.question_upvote(question_id=q2.pk, stream=s, user=viewer)
    _, on = services.question_upvote(question_id=q2.pk, stream=s, user=member)
    assert on
    _, on = services.question_upvote(question_id=q2.pk, stream=s, user=member)  # toggled off again
    assert not on
    assert [q.pk for q in selectors.questions_board(s)] == [q2.pk, q1.pk]
    services.question_mark(question_id=q2.pk, stream=s, actor=mod, status="answered")
    assert [q.pk for q in selectors.questions_board(s)] == [q1.pk, q2.pk]  # open ones first


def test_peak_is_only_raised():
    s = factories.stream()
    now = timezone.now()
    assert services.stream_peak_record(stream_id=s.pk, peak=10, at=now)
    assert not services.stream_peak_record(stream_id=s.pk, peak=7, at=now)
    s.refresh_from_db()
    assert s.peak_viewers == 10
