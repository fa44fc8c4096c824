"""Statements per stored stream chat message (docs/scaling.md, [S5]): one read, the room's next `cseq` and
the insert in one transaction; a retried send with the same ref reads and answers, stores nothing."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streaming import services
from streaming.models import StreamChatMessage
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_chat_message_costs_one_read_and_two_writes_and_a_retry_one_more_read():
    creator, viewer = factories.user(), factories.user()
    stream = factories.stream(factories.channel(owner=creator))
    services.chat_message_post(stream=stream, author=viewer, body="warm up", client_ref="r0")
    with CaptureQueriesContext(connection) as sent:
        first = services.chat_message_post(stream=stream, author=viewer, body="hello there", client_ref="r1")
    statements = [q["sql"].split()[0].upper() for q in sent.captured_queries]
    assert statements == ["SELECT", "BEGIN", "INSERT", "INSERT", "COMMIT"]  # read, seq upsert, message
    with CaptureQueriesContext(connection) as retried:
        again = services.chat_message_post(stream=stream, author=viewer, body="hello there", client_ref="r1")
    assert again.pk == first.pk and len(retried.captured_queries) == 2
    assert StreamChatMessage.objects.filter(stream=stream).count() == 2
