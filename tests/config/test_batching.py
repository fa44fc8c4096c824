"""Join-storm reads go to the database in batches: the coalescer, the batched login lookup and the batched
stream reads, against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.sessions.backends.cached_db import SessionStore

from config.realtime.batching import coalesced
from config.realtime.middleware import users_from_sessions
from streaming import selectors, services
from streaming.models import ChannelRole, StreamChatMessage
from streaming.selectors import ViewerRole
from tests import factories
from tests.conftest import login_cookie

# Batches run in the database threads, whose connection housekeeping touches the database.
pytestmark = pytest.mark.django_db(transaction=True)


async def test_calls_made_while_a_batch_runs_go_together_in_the_next_one():
    batches: list[list[int]] = []
    release = threading.Event()

    def double(items):
        batches.append(list(items))
        if len(batches) == 1:
            release.wait(10)  # the first batch is in the database while the others arrive
        return [i * 2 for i in items]

    load = coalesced(double)
    first = asyncio.ensure_future(load(0))
    while not batches:
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(load(i)) for i in range(1, 51)]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 2 for i in range(1, 51)]
    assert batches == [[0], list(range(1, 51))]
    assert await load(7) == 14  # idle again: a lone call runs at once, alone
    assert batches[-1] == [7]


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    def picky(items):
        if "bad" in items:
            raise ValueError("refused")
        return [s.upper() for s in items]

    load = coalesced(picky)
    # Made in one turn of the loop, the three calls are one batch, and one bad item fails all of them.
    results = await asyncio.gather(load("a"), load("bad"), load("c"), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert await asyncio.gather(load("d"), load("e")) == ["D", "E"]


def test_logins_are_resolved_in_one_batch_with_django_rules():
    ok, repassworded, deactivated = factories.user(), factories.user(), factories.user()
    keys = {u: login_cookie(u) for u in (ok, repassworded, deactivated)}
    repassworded.set_password("a-new-password-2026")
    repassworded.save()
    deactivated.is_active = False
    deactivated.save()
    foreign = SessionStore()
    foreign.update({"_auth_user_id": str(ok.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.RemoteUserBackend",
                    "_auth_user_hash": ok.get_session_auth_hash()})
    foreign.create()
    SessionStore(keys[ok]).load()  # one in the cache, the others only in the database
    batch = [keys[ok], keys[repassworded], keys[deactivated], "no-such-session-key-0000000000000", None,
             foreign.session_key, keys[ok]]
    out = users_from_sessions(batch)
    assert [(getattr(u, "pk", None), k) for u, k in out] == [
        (ok.pk, keys[ok]), (None, None), (None, None), (None, None), (None, None), (None, None), (ok.pk, keys[ok])]
    assert not out[1][0].is_authenticated and settings.AUTHENTICATION_BACKENDS != [foreign[BACKEND_SESSION_KEY]]


def test_stream_reads_for_many_viewers_in_one_batch(django_assert_max_num_queries):
    from django.contrib.auth.models import AnonymousUser

    creator, mod, member, viewer = (factories.user() for _ in range(4))
    channel = factories.channel(owner=creator)
    factories.channel_role(channel, mod, ChannelRole.Kind.MODERATOR)
    factories.channel_role(channel, member, ChannelRole.Kind.MEMBER)
    stream = factories.stream(channel)
    other = factories.stream(factories.channel(owner=factories.user()))
    with django_assert_max_num_queries(2):
        out = selectors.streams_and_roles([(stream.pk, creator), (stream.pk, mod), (stream.pk, member),
                                           (stream.pk, viewer), (stream.pk, AnonymousUser()), (other.pk, mod),
                                           (10**9, viewer)])
    assert [r for _, r in out] == [ViewerRole.CREATOR, ViewerRole.MODERATOR, ViewerRole.MEMBER, ViewerRole.VIEWER,
                                   ViewerRole.ANONYMOUS, ViewerRole.VIEWER, None]
    assert out[0][0] is not out[1][0] and out[0][0].pk == stream.pk and out[-1][0] is None

    services.chat_settings_set(stream=stream, actor=creator, hold_all=True)
    held = services.chat_message_post(stream=stream, author=viewer, body="wait for me")
    assert held.status == StreamChatMessage.Status.HELD
    poll = services.poll_open(stream=stream, actor=creator, question="Which?", options=["a", "b"])
    services.poll_vote(poll_id=poll.pk, stream=stream, user=member, choice=1)
    question = services.question_ask(stream=stream, author=member, body="Why?")
    services.question_upvote(question_id=question.pk, stream=stream, user=viewer)
    with django_assert_max_num_queries(4):
        parts = selectors.personal_parts([(stream.pk, viewer, [poll.pk], False, True),
                                          (stream.pk, member, [poll.pk], False, True),
                                          (stream.pk, mod, [poll.pk], True, False)])
    assert [m.pk for m in parts[0]["own_held"]] == [held.pk] and parts[0]["held"] is None
    assert parts[0]["my_upvotes"] == [question.pk] and parts[0]["mine"] == {}
    assert parts[1]["mine"] == {poll.pk: 1} and parts[1]["own_held"] == [] and parts[1]["my_upvotes"] == []
    assert [m.pk for m in parts[2]["held"]] == [held.pk] and parts[2]["my_upvotes"] == []
