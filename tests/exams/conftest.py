from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from exams import services
from exams.models import Exam, Question


class ExamWorld:
    def __init__(self, world, **exam_settings):
        self.w = world
        now = timezone.now()
        self.exam = services.exam_upsert(course=world.course_a, title="Unit test", opens_at=now - dt.timedelta(hours=1),
                                         closes_at=now + dt.timedelta(hours=3), time_limit_minutes=30,
                                         status=Exam.Status.PUBLISHED, **exam_settings)
        bank = services.bank_create(course=world.course_a, title="Bank")
        K = Question.Kind
        self.q_single = services.question_create(bank=bank, kind=K.SINGLE, prompt="2+2", options=["3", "4", "5"],
                                                 correct=[1])
        self.q_multi = services.question_create(bank=bank, kind=K.MULTIPLE, prompt="primes",
                                                options=["2", "4", "5", "9"], correct=[0, 2])
        self.q_tf = services.question_create(bank=bank, kind=K.TRUE_FALSE, prompt="sky blue", correct=[True])
        self.q_num = services.question_create(bank=bank, kind=K.NUMERIC, prompt="pi", numeric_answer="3.1416",
                                              numeric_tolerance="0.01")
        self.q_short = services.question_create(bank=bank, kind=K.SHORT, prompt="capital of France",
                                                correct=["Paris"])
        self.q_essay = services.question_create(bank=bank, kind=K.ESSAY, prompt="Explain", points=5)
        self.fixed = [self.q_single, self.q_multi, self.q_tf, self.q_num, self.q_short, self.q_essay]
        services.section_add(exam=self.exam, title="Part A", questions=self.fixed)
        self.exam.refresh_from_db()


@pytest.fixture
def ex(world):
    return ExamWorld(world)
