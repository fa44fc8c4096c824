"""Writes for channels and streams."""

from __future__ import annotations

import datetime as dt

from classrooms.services import upsert
from streaming.models import Channel, ChannelRole, Stream


def channel_upsert(*, owner, slug: str, title: str, description: str = "") -> Channel:
    return upsert(Channel, slug=slug, defaults={"owner": owner, "title": title, "description": description})


def channel_role_grant(*, channel: Channel, user, role: str) -> ChannelRole:
    grant, _ = ChannelRole.objects.get_or_create(channel=channel, user=user, role=role)
    return grant


def stream_upsert(*, channel: Channel, title: str, scheduled_start: dt.datetime | None = None,
                  player_url: str = "") -> Stream:
    return upsert(Stream, channel=channel, title=title,
                  defaults={"scheduled_start": scheduled_start, "player_url": player_url})
