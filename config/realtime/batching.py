"""Coalesce concurrent per-socket database reads into one batched call (a join storm pays per batch).

A connect needs a few small reads (the login session's user, the room and the person's role in it, their
own parts of the snapshot). One by one, thousands of sockets joining at once queue behind each other in
the database threads, and each round trip waits for the GIL behind the event loop. `coalesced(batch_fn)`
turns `batch_fn(items) -> results` (sync, same order) into an awaitable `load(item)`: calls made while a
batch is running wait and go together in the next one, so there is no added delay when the server is idle
(a lone call runs at once) and the number of round trips stays flat as the storm grows.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable
from typing import Any

from config.realtime.transport import db_call

MAX_BATCH = 500


class _Coalescer:
    __slots__ = ("call", "pending", "running")

    def __init__(self, batch_fn: Callable[[list[Any]], list[Any]]):
        # health_check=True: a batch is one statement or a few reads; Django checks an idle connection.
        self.call = db_call(batch_fn)
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = False

    async def load(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((item, future))
        if not self.running:
            self.running = True
            # A fresh context: the batch serves many sockets, so it must not carry one caller's log ids.
            loop.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    results = await self.call([item for item, _ in batch])
                except BaseException as exc:  # every waiter gets the failure (its socket is refused)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the socket may have gone meanwhile (its await was cancelled)
                        future.set_result(result)
        finally:
            self.running = False
            for _, future in self.pending:  # only when the drain itself was cancelled (loop shutting down)
                if not future.done():
                    future.cancel()
            self.pending = []


def coalesced(batch_fn: Callable[[list[Any]], list[Any]]) -> Callable[[Any], Any]:
    """`await load(item)` for one item; `batch_fn` (sync, run in the database pool) answers a list."""
    per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Coalescer] = weakref.WeakKeyDictionary()

    async def load(item: Any) -> Any:
        loop = asyncio.get_running_loop()
        coalescer = per_loop.get(loop)
        if coalescer is None:
            coalescer = per_loop[loop] = _Coalescer(batch_fn)
        return await coalescer.load(item)

    load.batch = batch_fn  # the sync form, for callers already in a thread and for tests
    return load
