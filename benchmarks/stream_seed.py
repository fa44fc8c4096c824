"""Create one channel with a live stream and N signed-in viewers, plus a login session per viewer.

Run by benchmarks/streams.py in its own process (it needs Django; the harness does not):
`python -m benchmarks.stream_seed --viewers 5000 --out seed.json`. People, the channel and the stream go
through the services (users are audited records: compliance.audit refuses bulk writes of them; the creator
starts the stream with streaming.services.stream_go_live). The login sessions, which are no one's record,
are written in bulk, one INSERT per 1,000 rows: no HTTP login, no password hashing, each session exactly
what django.contrib.auth.login stores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_seed")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.models import Session
    from django.db import transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string
    from django.utils.module_loading import import_string

    from classrooms.services import user_upsert
    from streaming import live, services
    from streaming.models import Stream

    started = time.monotonic()
    with transaction.atomic():
        creator = user_upsert(email="creator@bench.example", password=None, first_name="Creator")
        channel = services.channel_upsert(owner=creator, slug="bench-channel", title="Bench channel")
        stream = services.stream_upsert(channel=channel, title="Bench stream")
        viewers = [user_upsert(email=f"v{i:05d}@bench.example", password=None, first_name=f"Viewer{i:05d}")
                   for i in range(args.viewers)]
    if stream.status == Stream.Status.SCHEDULED:
        stream = services.stream_go_live(stream=stream, actor=creator)  # as its creator does (stream.status)
    seeded = time.monotonic() - started

    # A login session per viewer, as django.contrib.auth.login would store it, encoded by the configured
    # engine. cached_db's save() writes the row and the cache entry, so a viewer who just signed in is
    # found in the cache at connect: the same here (the database row stays the truth).
    store_class = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    backend = settings.AUTHENTICATION_BACKENDS[0]
    expires = timezone.now() + dt.timedelta(seconds=settings.SESSION_COOKIE_AGE)
    encoder = store_class()
    rows, keys = [], []
    for user in viewers:
        key = get_random_string(32, VALID_KEY_CHARS)
        data = {SESSION_KEY: user._meta.pk.value_to_string(user), BACKEND_SESSION_KEY: backend,
                HASH_SESSION_KEY: user.get_session_auth_hash()}
        rows.append(Session(session_key=key, session_data=encoder.encode(data), expire_date=expires))
        keys.append(key)
    Session.objects.bulk_create(rows, batch_size=1000)
    if hasattr(store_class, "cache_key"):
        cache_of = store_class(keys[0]) if keys else None
        age = settings.SESSION_COOKIE_AGE
        for start in range(0, len(rows), 1000):
            cache_of._cache.set_many({store_class(r.session_key).cache_key: encoder.decode(r.session_data)
                                      for r in rows[start:start + 1000]}, age)

    out = {"stream_id": stream.pk, "channel_id": channel.pk, "cookie_name": settings.SESSION_COOKIE_NAME,
           "window_ms": getattr(settings, "AULA_STREAM_REACTION_WINDOW_MS", None),
           "chat_fanout_per_s": getattr(settings, "AULA_STREAM_CHAT_FANOUT_PER_SEC", None),
           "reactions_per_viewer_s": getattr(settings, "AULA_STREAM_REACTIONS_PER_SEC", None),
           # Where the room counts accepted reactions per second (streaming.live, fields rx.<emoji>).
           "live_counters": {"url": settings.REDIS_REALTIME_SHARDS[0], "prefix": live._prefix(stream.pk)},
           "viewers": [{"id": u.pk, "key": k} for u, k in zip(viewers, keys, strict=True)],
           "seed_seconds": round(seeded, 1)}
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    print(f"[bench] seeded {args.viewers} viewers in {seeded:.1f}s, sessions in "
          f"{time.monotonic() - started - seeded:.1f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
