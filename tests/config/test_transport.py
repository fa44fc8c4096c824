"""Persist first, then broadcast: sequence numbers, the event log and publish-after-commit."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from django.conf import settings
from django.db import transaction

from config.realtime import transport
from config.realtime.models import RoomEvent

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A real Redis subscriber on a room's channel, collecting published frames."""

    def __init__(self, room_key: str):
        self.client = redis.Redis.from_url(settings.REDIS_REALTIME_URL)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(transport.redis_channel(room_key))
        self.pubsub.get_message(timeout=1)  # subscribe confirmation

    def frames(self, wait: float = 0.3) -> list[dict]:
        out = []
        while (m := self.pubsub.get_message(timeout=wait)) is not None:
            out.append(json.loads(m["data"]))
        return out


def test_sequence_numbers_increase_per_room_and_events_are_stored():
    listener = Listener("i1.ls1")
    for i in range(3):
        transport.room_event_emit("i1.ls1", "chat.message", {"n": i})
    transport.room_event_emit("i1.ls2", "chat.message", {"n": 99})
    frames = listener.frames()
    assert [f["seq"] for f in frames] == [1, 2, 3]
    assert [f["data"]["n"] for f in frames] == [0, 1, 2]
    assert frames[0]["type"] == "chat.message" and frames[0]["v"] == 1 and frames[0]["ts"].endswith("Z")
    assert list(RoomEvent.objects.filter(room_key="i1.ls2").values_list("seq", flat=True)) == [1]
    assert transport.room_last_seq("i1.ls1") == 3
    assert [e.seq for e in transport.room_events_since("i1.ls1", 1, 10)] == [2, 3]


def test_nothing_is_published_before_commit_or_after_rollback():
    listener = Listener("i1.ls9")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            transport.room_event_emit("i1.ls9", "chat.message", {"n": 1})
            assert listener.frames(wait=0.2) == []  # not yet committed: nothing on the wire
            raise RuntimeError("writer failed")
    assert listener.frames(wait=0.2) == []
    assert not RoomEvent.objects.filter(room_key="i1.ls9").exists()
    # the rolled-back number is reused: no gap for clients to chase
    transport.room_event_emit("i1.ls9", "chat.message", {"n": 2})
    assert [f["seq"] for f in listener.frames()] == [1]


def test_concurrent_writers_get_distinct_gapless_sequence_numbers():
    from django.db import connection

    errors = []

    def writer():
        try:
            for _ in range(20):
                transport.room_event_emit("i1.lsC", "x", {})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = sorted(RoomEvent.objects.filter(room_key="i1.lsC").values_list("seq", flat=True))
    assert seqs == list(range(1, 81))


def test_next_seq_outside_a_transaction_is_a_programming_error():
    with pytest.raises(RuntimeError):
        transport.room_next_seq("i1.ls1")


def test_publish_failure_is_logged_not_raised(monkeypatch, caplog):
    def broken(shard: int = 0):
        return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)

    monkeypatch.setattr(transport, "_redis", broken)
    event = transport.room_event_emit("i1.lsF", "chat.message", {"n": 1})
    assert RoomEvent.objects.filter(pk=event.pk).exists()  # stored: clients recover it by seq
    assert any("realtime publish failed" in r.getMessage() for r in caplog.records)
