"""WebSocket adapter of the live review queue (`/ws/moderation/queue/`): the queue signals of every group a
reviewer reviews, and the queue's actions (claim, release, decide, escalate) as frames.

Rooms. The services publish each `queue.item` signal to every group that may review the item (its course,
school, district, channel, and the platform, stream trust & safety and legal groups: moderation.realtime). The
room hub lets one socket be a member of several rooms (hub.Member: "in one or more rooms"; the live session's
teacher socket also joins the staff room), so this socket joins each of the person's groups directly: no per-
person fan-in room, and no republishing. Its own room key is the person's (`modq.u<id>`), which carries
nothing; it only anchors the socket in the base consumer. The group set is recomputed every
AULA_SOCKET_RECHECK_SECONDS: a teacher removed from a course stops receiving its signals, one given a new
course starts; a person who reviews nothing any more is closed with 4403.

A signal carries ids, versions, status and tier, never text: the page re-reads the row through the HTTP
fragment endpoint, which re-checks scope (a signal of the school group reaches a teacher only if they are also
the school's staff, and a row they may not see answers 404 there).
"""

from __future__ import annotations

from typing import Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from pydantic import Field

from config.realtime.consumer import FrameError, Refused, RoomConsumer
from config.realtime.hub import hub
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping
from config.realtime.ratelimit import Limit, RateLimiter, limits
from config.realtime.transport import db_call, encode_frame
from moderation import selectors, services

ACTION_LIMIT = Limit(60, 10)  # per person; AULA_RATE_LIMITS "moderation=N/S" overrides
CONNECTIONS_PER_USER = 5


def _fresh_groups(user_ids: list[int]) -> dict[int, list[str]]:
    """Each person's groups read afresh (a new user object: permissions and account state are not cached)."""
    users = get_user_model().objects.filter(pk__in=user_ids)
    found = {u.pk: selectors.queue_groups_for(u) for u in users}
    return {uid: found.get(uid, []) for uid in user_ids}


def _open_counts(user) -> dict:
    return selectors.queue_counts(user)


# --- inbound messages --------------------------------------------------------------------------------------

class ItemRef(Inbound):
    id: int = Field(ge=1)
    version: int = Field(ge=1)


class ItemEscalate(ItemRef):
    reason: str = Field(default="", max_length=200)


class ItemAssign(ItemRef):
    assignee: str = Field(min_length=3, max_length=254)  # the colleague's email


class ItemDecide(ItemRef):
    decision: Literal["approve", "context", "remove", "censor", "warn", "timeout", "ban"]
    note: str = Field(default="", max_length=500)
    minutes: int | None = Field(default=None, ge=1, le=services.MAX_TIMEOUT_MINUTES)
    scope: Literal["room", "channel", "institution"] | None = None


class QueueConsumer(RoomConsumer):
    """`/ws/moderation/queue/`: reviewers only (4404 for anyone who reviews nothing, like the page's 404)."""

    connection_cap = CONNECTIONS_PER_USER
    cap_pool = "modq"
    measure_latency = False
    inbound = {"ping": Ping, "item.claim": ItemRef, "item.release": ItemRef, "item.decide": ItemDecide,
               "item.assign": ItemAssign,
               "item.escalate": ItemEscalate}

    groups: tuple[str, ...] = ()

    async def authorize(self) -> str:
        groups = await db_call(selectors.queue_groups_for)(self.user)
        if not groups:
            raise Refused(CloseCode.NOT_FOUND, "no review queue")
        self.groups = ()
        self._wanted = tuple(groups)
        self.limiter = RateLimiter(hub()._redis, settings.AULA_REDIS_KEY_PREFIX)
        self.action_limit = limits().get("moderation", ACTION_LIMIT)
        return f"modq.u{int(self.user.pk)}"

    @property
    def recheck_group(self) -> str:
        return "modq.reviewers"  # one re-check task per process for every queue socket

    async def joined(self) -> None:
        await self._set_groups(self._wanted)
        counts = await db_call(_open_counts)(self.user)
        # No seq: queue signals are hints; after a reconnect the page re-reads its rows (docs/protocol.md).
        await self.reply(encode_frame("snapshot", {"last_seq": None, "counts": counts,
                                                   "server_time": timezone.now().isoformat()}))

    async def left(self) -> None:
        groups, self.groups = self.groups, ()
        for group in groups:
            await hub().leave(group, self.member)

    async def _set_groups(self, wanted) -> None:
        wanted = tuple(dict.fromkeys(wanted))
        current = set(self.groups)
        for group in current - set(wanted):
            await hub().leave(group, self.member)
        self.groups = wanted
        for group in wanted:
            if group not in current:
                await hub().join(group, self.member)
        if self.member.closed:  # the socket went away while we joined: `left` may have run already
            for group in wanted:
                await hub().leave(group, self.member)

    @classmethod
    async def heartbeat_many(cls, consumers: list[QueueConsumer]) -> None:
        """Each re-check period: follow changes of the people's groups (one batch of queries)."""
        await super().heartbeat_many(consumers)
        fresh = await db_call(_fresh_groups)(list({c.user.pk for c in consumers}))
        for consumer in consumers:
            wanted = fresh.get(consumer.user.pk) or []
            if wanted and not consumer.closing and consumer.member is not None and not consumer.member.closed \
                    and tuple(wanted) != consumer.groups:
                await consumer._set_groups(wanted)

    @classmethod
    def still_authorized_many(cls, consumers: list[QueueConsumer]) -> dict[QueueConsumer, CloseCode]:
        fresh = _fresh_groups(list({c.user.pk for c in consumers}))
        return {c: CloseCode.FORBIDDEN for c in consumers if not fresh.get(c.user.pk)}

    # --- actions: one service call each ---------------------------------------------------------------
    async def _allow(self) -> None:
        verdict = await self.limiter.hit(f"modq:{self.user.pk}", self.action_limit)
        if not verdict.allowed:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=verdict.retry_after)

    async def _run(self, ref: str | None, item_id: int, fn, **kwargs) -> None:
        await self._allow()
        def call():
            # The person as they are now (permissions and scope are cached on the connect-time user object).
            actor = get_user_model().objects.filter(pk=self.user.pk, is_active=True).first()
            if actor is None:
                raise FrameError(ErrorCode.FORBIDDEN, "Your account can no longer review.")
            return fn(item_id=item_id, actor=actor, **kwargs)

        try:
            item = await db_call(call)()
        except services.Stale as exc:
            raise FrameError(ErrorCode.CONFLICT, str(exc), id=item_id) from None
        await self.ack(ref, id=item_id, version=item.version, status=item.status)

    async def on_item_claim(self, msg: ItemRef) -> None:
        await self._run(msg.ref, msg.id, services.item_claim, version=msg.version)

    async def on_item_release(self, msg: ItemRef) -> None:
        await self._run(msg.ref, msg.id, services.item_release, version=msg.version)

    async def on_item_assign(self, msg: ItemAssign) -> None:
        await self._run(msg.ref, msg.id, services.item_assign, version=msg.version, assignee_email=msg.assignee)

    async def on_item_decide(self, msg: ItemDecide) -> None:
        await self._run(msg.ref, msg.id, services.item_decide, version=msg.version, decision=msg.decision,
                        note=msg.note, minutes=msg.minutes if msg.decision == "timeout" else None, scope=msg.scope)

    async def on_item_escalate(self, msg: ItemEscalate) -> None:
        from moderation.views import escalate_checked

        await self._run(msg.ref, msg.id, escalate_checked, version=msg.version, reason=msg.reason)

