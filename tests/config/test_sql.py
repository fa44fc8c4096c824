"""config.sql: instances built from hand-written statements behave like queried ones."""

from __future__ import annotations

import pytest
from django.db import connection

from config.sql import from_row, select_list
from exams import services
from exams.models import Attempt
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db


def test_from_row_matches_the_orm_including_json_and_deferred_columns(world):
    ex = ExamWorld(world)
    queried = services.attempt_start(exam=ex.exam, student=world.student_a)
    queried = Attempt.objects.get(pk=queried.pk)
    with connection.cursor() as cur:
        cur.execute(f"SELECT {select_list(Attempt, 'a')} FROM exams_attempt a WHERE a.id = %s", [queried.pk])
        built = from_row(Attempt, cur.fetchone())
        cur.execute(f"SELECT {select_list(Attempt, 'a', exclude=('layout',))} FROM exams_attempt a "
                    "WHERE a.id = %s", [queried.pk])
        partial = from_row(Attempt, cur.fetchone(), exclude=("layout",))
    for field in Attempt._meta.concrete_fields:
        assert getattr(built, field.attname) == getattr(queried, field.attname), field.name
    assert isinstance(built.layout, list) and not built._state.adding
    assert "layout" in partial.get_deferred_fields()
    assert partial.layout == queried.layout  # loaded on access, like .defer()
