"""The flush: rollups equal what was recorded, once, whatever happens between commit and acknowledgement."""

from __future__ import annotations

import pytest
from django.db.models import Sum

from analytics import buffer, services
from analytics.models import FlushLedger, Rollup

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_buffer(settings):
    """Each test has an event stream of its own: other tests on this worker may have left events in theirs,
    and an end-to-end test's Celery analytics worker may still be draining it (both would change what
    counts against the bound)."""
    import uuid

    buffer.flush_now()
    settings.AULA_REDIS_KEY_PREFIX = f"{settings.AULA_REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    yield
    services.analytics_redis().delete(buffer.stream_key(), buffer.overflow_key())


def produce(n_events: int, *, at: float = 1_700_000_000.0, kind: str = "reaction", scope_id: int = 7) -> int:
    for i in range(n_events):
        buffer.record(kind, scope="stream", scope_id=scope_id, n=2, at=at + i, country="FR", segment="member",
                      emoji="fire")
    buffer.flush_now()
    return 2 * n_events


def total(window: int = 10, **filters) -> int:
    return Rollup.objects.filter(window_seconds=window, **filters).aggregate(n=Sum("count"))["n"] or 0


def stream_len() -> int:
    return services.analytics_redis().xlen(buffer.stream_key())


def test_bucketing_puts_each_event_in_its_window():
    assert services.bucket_start(1_700_000_009.9, 10) == 1_700_000_000
    assert services.bucket_start(1_700_000_010.0, 10) == 1_700_000_010
    assert services.bucket_start(1_700_000_059.0, 60) == 1_700_000_040


def test_flush_counts_every_event_once_in_every_window():
    produced = produce(50)
    result = services.flush(batch=7)
    assert result.counted == produced and result.batches >= 8
    for window in (10, 60, 300):
        assert total(window) == produced
    assert total(10, country="FR", segment="member", detail="emoji=fire", kind="reaction") == produced
    assert Rollup.objects.filter(window_seconds=10).count() == 5  # 50 one-second-apart events in 10 s buckets
    assert stream_len() == 0  # acknowledged and deleted
    assert services.flush().counted == 0  # nothing new: nothing counted


def test_applying_the_same_batch_twice_counts_it_once():
    produced = produce(20)
    r = services.analytics_redis()
    services._ensure_group(r)
    entries = r.xreadgroup(services.GROUP, "w1", {buffer.stream_key(): ">"}, count=100)[0][1]
    assert services.batch_apply(entries, contiguous=True) == produced
    assert services.batch_apply(entries, contiguous=True) == 0  # a second worker with the same batch
    assert services.batch_apply(entries[5:12], contiguous=False) == 0  # part of it, re-claimed
    assert total() == produced


def test_a_crash_between_commit_and_ack_is_reclaimed_without_double_counting(settings):
    settings.AULA_ANALYTICS_CLAIM_IDLE_SECONDS = 1
    produced = produce(30)
    r = services.analytics_redis()
    services._ensure_group(r)
    entries = r.xreadgroup(services.GROUP, "dead-worker", {buffer.stream_key(): ">"}, count=1000)[0][1]
    services.batch_apply(entries, contiguous=True)  # committed, then the worker died before XACK
    more = produce(5, at=1_700_000_100.0)  # new events arrive meanwhile
    import time

    time.sleep(1.2)
    result = services.flush(consumer="survivor")
    assert result.reclaimed == 30 and result.counted == more
    assert total() == produced + more
    assert stream_len() == 0
    assert r.xpending(buffer.stream_key(), services.GROUP)["pending"] == 0


def test_a_batch_that_never_committed_is_counted_by_the_reclaim(settings):
    settings.AULA_ANALYTICS_CLAIM_IDLE_SECONDS = 1
    produced = produce(12)
    r = services.analytics_redis()
    services._ensure_group(r)
    r.xreadgroup(services.GROUP, "dead-worker", {buffer.stream_key(): ">"}, count=1000)  # read, died before commit
    import time

    time.sleep(1.2)
    assert services.flush(consumer="survivor").counted == produced
    assert total() == produced
    assert FlushLedger.objects.filter(entries=1).count() == 12  # re-claimed entries: one ledger row each


def test_overflow_is_counted_exactly_past_the_bound(settings):
    settings.AULA_ANALYTICS_BUFFER_MAX = 1000
    produced = produce(1200)
    overflow = {k.decode(): int(v) for k, v in services.analytics_redis().hgetall(buffer.overflow_key()).items()}
    services.flush()
    assert overflow == {"reaction": 200}
    assert total() + 2 * overflow["reaction"] == produced  # stored + overflow == produced (n=2 each)
