"""The Redis cache backend: Django's behaviour, one redis-py client per pool rather than one per call."""

from __future__ import annotations

import threading

from django.core.cache import cache, caches


def test_cache_reuses_one_client_and_behaves_like_djangos():
    backend = caches["default"]
    assert backend._cache.get_client() is backend._cache.get_client(write=True)
    cache.set("aula-cache-test", {"n": 1}, 30)
    assert cache.get("aula-cache-test") == {"n": 1}
    assert cache.add("aula-cache-test", 2, 30) is False  # already there
    cache.delete("aula-cache-counter")
    assert cache.add("aula-cache-counter", 0, 30) is True and cache.incr("aula-cache-counter") == 1
    assert cache.get_many(["aula-cache-test", "missing"]) == {"aula-cache-test": {"n": 1}}
    cache.delete("aula-cache-test")
    assert cache.get("aula-cache-test") is None


def test_threads_share_nothing_but_each_reuses_its_client():
    seen, errors = [], []

    def work(i):
        try:
            client = caches["default"]._cache.get_client()
            for n in range(50):
                cache.set(f"aula-thread-{i}", n, 30)
                assert cache.get(f"aula-thread-{i}") == n
            seen.append((i, client is caches["default"]._cache.get_client()))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(seen) == [(i, True) for i in range(6)]


def test_pool_threads_with_a_copied_context_reuse_the_process_client():
    """The HTTP handler and the sockets' database calls run in pool threads with a copied context, where
    `caches` is a fresh object each time: the client (and its connections) must still be the same."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    def client_here():
        return caches["default"]._cache.get_client()

    with ThreadPoolExecutor(2) as pool:
        seen = [pool.submit(contextvars.copy_context().run, client_here).result() for _ in range(5)]
    assert all(c is client_here() for c in seen)
