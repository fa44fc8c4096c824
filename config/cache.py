"""Django's Redis cache backend, with one redis-py client per server for the whole process, not one per call.

Django's `RedisCacheClient.get_client` builds a new `redis.Redis` for every cache call; with redis-py 6
that constructor alone costs ≈ 160 µs of CPU (it builds the response-callback table), more than the
round trip it wraps, and every request reads its session and most write something. And `django.core.cache
.caches` is context-local (asgiref `Local`): work run in a pool thread with a copied context (the HTTP
handler, the sockets' database calls) gets a fresh cache object each time, so clients and connection
pools kept on the cache object would be rebuilt on every call. They are kept here, per process, keyed by
server and options; a redis-py client is a thin wrapper over its thread-safe (and fork-safe) pool.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


class PooledClientRedisCacheClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        ident = (self._servers[index], self._client, repr(sorted(self._pool_options.items(), key=str)))
        client = _clients.get(ident)
        if client is None:
            with _lock:
                client = _clients.get(ident)
                if client is None:
                    pool = self._pool_class.from_url(self._servers[index], **self._pool_options)
                    client = _clients[ident] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = PooledClientRedisCacheClient
