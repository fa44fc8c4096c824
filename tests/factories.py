"""Test data built through the real services (no direct model writes for domain state)."""

from __future__ import annotations

import itertools

from classrooms import services
from classrooms.models import Course, District, Institution, LiveSession, Role, User

PASSWORD = "correct-horse-battery-staple"
_n = itertools.count(1)


def district(slug: str | None = None) -> District:
    n = next(_n)
    slug = slug or f"district-{n}"
    return services.district_upsert(slug=slug, name=f"District {slug}")


def institution(dist: District | None = None, slug: str | None = None) -> Institution:
    n = next(_n)
    dist = dist or district()
    slug = slug or f"school-{n}"
    return services.institution_upsert(district=dist, slug=slug, name=f"School {slug}")


def user(name: str | None = None, *, staff: bool = False, age: int | None = 30, superuser: bool = False) -> User:
    import datetime as dt

    from django.utils import timezone

    n = next(_n)
    name = name or f"user{n}"
    dob = None if age is None else timezone.localdate().replace(year=timezone.localdate().year - age) - dt.timedelta(days=3)
    u = services.user_upsert(email=f"{name}@example.test", username=name, password=PASSWORD, first_name=name.title(),
                             date_of_birth=dob, is_staff=staff)
    if superuser:
        u.is_superuser = u.is_staff = True
        u.save()
    return u


def staff_of(inst: Institution, name: str | None = None) -> User:
    from django.contrib.auth.models import Group

    from classrooms.management.commands.seed_demo import staff_group

    u = user(name, staff=True)
    services.membership_grant(user=u, institution=inst, role=Role.STAFF)
    group: Group = staff_group()
    u.groups.add(group)
    return u


def course(inst: Institution, code: str | None = None) -> Course:
    n = next(_n)
    return services.course_upsert(institution=inst, code=code or f"C-{n}", title=f"Course {n}", term="t1")


def enroll(c: Course, u: User, role: str = Role.STUDENT):
    services.membership_grant(user=u, institution=c.institution, role=Role.TEACHER if role == Role.TEACHER else Role.STUDENT)
    return services.enrollment_upsert(course=c, user=u, role=role)


def live_session(c: Course, title: str | None = None) -> LiveSession:
    n = next(_n)
    return services.live_session_upsert(course=c, title=title or f"Session {n}")


def two_question_exam(c: Course, title: str = "Cells quiz"):
    """A published, open exam of two objective questions (right answers: "4", True), its questions as `.q`."""
    import datetime as dt

    from django.utils import timezone

    from exams import services as exam_services
    from exams.models import Exam, Question

    now = timezone.now()
    exam = exam_services.exam_upsert(course=c, title=title, opens_at=now - dt.timedelta(hours=1),
                                     closes_at=now + dt.timedelta(hours=3), time_limit_minutes=30,
                                     status=Exam.Status.PUBLISHED)
    bank = exam_services.bank_create(course=c, title="Bank")
    q1 = exam_services.question_create(bank=bank, kind=Question.Kind.SINGLE, prompt="2+2", options=["3", "4"],
                                       correct=[1])
    q2 = exam_services.question_create(bank=bank, kind=Question.Kind.TRUE_FALSE, prompt="Cells divide",
                                       correct=[True])
    exam_services.section_add(exam=exam, title="Part A", questions=[q1, q2])
    exam.refresh_from_db()
    exam.q = (q1, q2)
    return exam


class World:
    """Two schools of one district plus a school of another district, each with a course and people."""

    def __init__(self):
        self.district = district()
        self.other_district = district()
        self.school_a = institution(self.district)
        self.school_b = institution(self.district)
        self.school_c = institution(self.other_district)
        self.course_a = course(self.school_a, "SCI-A")
        self.course_b = course(self.school_b, "SCI-B")
        self.course_c = course(self.school_c, "SCI-C")
        self.teacher_a = user("teacher_a")
        enroll(self.course_a, self.teacher_a, Role.TEACHER)
        self.student_a = user("student_a", age=14)
        enroll(self.course_a, self.student_a)
        self.student_b = user("student_b", age=14)
        enroll(self.course_b, self.student_b)
        self.student_c = user("student_c", age=14)
        enroll(self.course_c, self.student_c)
        self.outsider = user("outsider")
        self.staff_a = staff_of(self.school_a, "staff_a")
        self.staff_b = staff_of(self.school_b, "staff_b")
        self.session_a = live_session(self.course_a, "Live A")
        self.session_b = live_session(self.course_b, "Live B")
        self.session_c = live_session(self.course_c, "Live C")


# --- streaming -------------------------------------------------------------------------------------------

def channel(owner: User | None = None, slug: str | None = None):
    from streaming import services as streaming_services

    n = next(_n)
    return streaming_services.channel_upsert(owner=owner or user(), slug=slug or f"channel-{n}", title=f"Channel {n}")


def stream(ch=None, *, live: bool = True, title: str | None = None, player_url: str = ""):
    """A stream of `ch` (a new channel by default), taken live through the service unless `live=False`."""
    from streaming import services as streaming_services

    ch = ch or channel()
    s = streaming_services.stream_upsert(channel=ch, title=title or f"Stream {next(_n)}", player_url=player_url)
    if live:
        s = streaming_services.stream_go_live(stream=s, actor=None)
    return s


def channel_role(ch, u: User, role: str):
    from streaming import services as streaming_services

    return streaming_services.channel_role_grant(channel=ch, user=u, role=role)
