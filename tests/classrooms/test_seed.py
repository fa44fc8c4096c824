"""The demo seed: complete, two tenants, and idempotent."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from classrooms.models import Course, Enrollment, Institution, LiveSession, User

pytestmark = pytest.mark.django_db


def test_seed_demo_is_complete_and_idempotent():
    call_command("seed_demo", verbosity=0)
    counts = (User.objects.count(), Enrollment.objects.count(), LogEntry.objects.count())
    call_command("seed_demo", verbosity=0)
    assert (User.objects.count(), Enrollment.objects.count(), LogEntry.objects.count()) == counts

    assert Institution.objects.filter(district__slug="lakeview").count() == 2
    course = Course.objects.get(code="SCI-7")
    students = User.objects.filter(enrollments__course=course, enrollments__role="student")
    assert students.count() == 30
    assert sum(1 for s in students if s.is_under_13) == 10
    assert Enrollment.objects.get(course=course, role="teacher").user.email == "teacher@northside.example"
    assert LiveSession.objects.filter(course=course).exists()
    guardian = User.objects.get(email="guardian@northside.example")
    assert guardian.wards.count() == 1
    staff = User.objects.get(email="staff@northside.example")
    assert staff.is_staff and staff.groups.filter(name="School staff").exists()
    from compliance.models import DistrictAPIClient
    from exams.models import Exam
    from streaming.models import Stream

    assert DistrictAPIClient.objects.filter(district__slug="lakeview").exists()
    assert Exam.objects.filter(course=course).exists()
    assert Stream.objects.exists()
