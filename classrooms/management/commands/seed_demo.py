"""`manage.py seed_demo`: an idempotent demo — two schools of one district, a course, people, placeholders.

Running it again changes nothing (every write is an upsert through the services).
"""

from __future__ import annotations

import datetime as dt

from auditlog.context import set_actor
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import Application

from classrooms import services
from classrooms.models import Role
from compliance.models import DistrictAPIClient
from exams.models import Exam
from exams.services import exam_upsert
from streaming.models import ChannelRole
from streaming.services import channel_role_grant, channel_upsert, stream_upsert

DEMO_PASSWORD = "aula-demo-2026"
STAFF_GROUP = "School staff"
STAFF_PERMISSIONS = {
    "classrooms": {"user": "view change add", "membership": "view change add", "guardianship": "view change add",
                   "course": "view change add", "enrollment": "view change add", "livesession": "view change add",
                   "institution": "view change", "district": "view"},
    "exams": {"exam": "view change add", "questionbank": "view change add", "question": "view change add",
              "section": "view change add", "accommodation": "view change add", "attempt": "view",
              "gradesync": "view"},
    # COPPA consent and deletion records; FERPA: who accessed their students' records, and the record of
    # disclosures (manual entries too).
    "compliance": {"parentalconsent": "view add", "schoolauthorization": "view add", "childdatadeletion": "view add",
                   "accessentry": "view", "disclosure": "view add"},
}
# Demo API client credentials (development only; printed so the API can be tried at once).
DEMO_CLIENT_ID = "lakeview-sis-demo"
DEMO_CLIENT_SECRET = "demo-secret-change-me-0123456789abcdef"


def staff_group() -> Group:
    group, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    perms = []
    for app_label, models in STAFF_PERMISSIONS.items():
        for model, actions in models.items():
            for action in actions.split():
                perms.append(Permission.objects.get(content_type__app_label=app_label, codename=f"{action}_{model}"))
    group.permissions.set(perms)
    return group


class Command(BaseCommand):
    help = "Create or refresh the demo data (idempotent)."

    def handle(self, *args, **options):
        with set_actor(None), transaction.atomic():
            self._seed()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))

    def _seed_exam(self, course, accommodated):
        """An open exam with every question kind, attempts pre-created, one accommodated student."""
        from exams import services as exam_services
        from exams.models import Question, QuestionBank

        now = timezone.now().replace(second=0, microsecond=0)
        exam = exam_upsert(course=course, title="Science 7 — Unit 1 quiz", opens_at=now - dt.timedelta(hours=1),
                           closes_at=now + dt.timedelta(days=7), time_limit_minutes=20,
                           status=Exam.Status.PUBLISHED)
        if not QuestionBank.objects.filter(course=course, title="Unit 1").exists():
            bank = exam_services.bank_create(course=course, title="Unit 1")
            K = Question.Kind
            questions = [
                exam_services.question_create(bank=bank, kind=K.SINGLE, prompt="Which organelle makes energy?",
                                              options=["Nucleus", "Mitochondrion", "Ribosome"], correct=[1]),
                exam_services.question_create(bank=bank, kind=K.MULTIPLE, prompt="Which are found in plant cells?",
                                              options=["Cell wall", "Chloroplast", "Centriole"], correct=[0, 1]),
                exam_services.question_create(bank=bank, kind=K.TRUE_FALSE, prompt="All cells have a nucleus.",
                                              correct=[False]),
                exam_services.question_create(bank=bank, kind=K.NUMERIC, prompt="How many chromosomes in a "
                                              "human body cell?", numeric_answer=46),
                exam_services.question_create(bank=bank, kind=K.SHORT, prompt="The basic unit of life is the …",
                                              correct=["cell"]),
                exam_services.question_create(bank=bank, kind=K.ESSAY, prompt="Explain osmosis in two sentences.",
                                              points=4),
            ]
            exam_services.section_add(exam=exam, title="Unit 1", questions=questions)
        exam_services.accommodation_set(student=accommodated, institution_id=course.institution_id,
                                        time_multiplier="1.5")
        exam_services.attempts_precreate(exam=exam)

    def _seed(self):
        today = timezone.localdate()
        district = services.district_upsert(slug="lakeview", name="Lakeview Unified School District")
        north = services.institution_upsert(district=district, slug="northside-middle",
                                            name="Northside Middle School", timezone="America/Chicago")
        south = services.institution_upsert(district=district, slug="southside-high",
                                            name="Southside High School", timezone="America/Chicago")
        group = staff_group()

        def person(email, first, last, *, born_years_ago=None, staff=False):
            dob = None
            if born_years_ago is not None:
                dob = today.replace(year=today.year - born_years_ago) - dt.timedelta(days=40)
            return services.user_upsert(email=email, username=email, password=DEMO_PASSWORD,
                                        first_name=first, last_name=last, date_of_birth=dob, is_staff=staff)

        teacher = person("teacher@northside.example", "Maya", "Okafor", born_years_ago=38)
        services.membership_grant(user=teacher, institution=north, role=Role.TEACHER)
        staff = person("staff@northside.example", "Sam", "Reyes", born_years_ago=45, staff=True)
        services.membership_grant(user=staff, institution=north, role=Role.STAFF)
        staff.groups.add(group)
        district_admin = person("district.admin@lakeview.example", "Dana", "Whitfield", born_years_ago=50, staff=True)
        services.district_admin_grant(user=district_admin, district=district)
        district_admin.groups.add(group)

        course = services.course_upsert(institution=north, code="SCI-7", title="Science 7", term="2026-fall")
        services.enrollment_upsert(course=course, user=teacher, role=Role.TEACHER)
        students = []
        for n in range(1, 31):
            # Students 01–10 are 12 (under 13: COPPA applies), 11–30 are 13.
            s = person(f"student{n:02d}@northside.example", f"Student{n:02d}", "Demo",
                       born_years_ago=12 if n <= 10 else 13)
            services.membership_grant(user=s, institution=north, role=Role.STUDENT, grade_level="7")
            services.enrollment_upsert(course=course, user=s, role=Role.STUDENT)
            students.append(s)
        guardian = person("guardian@northside.example", "Grace", "Demo", born_years_ago=40)
        services.guardianship_link(guardian=guardian, student=students[0], institution=north)

        # The second school: its own staff, teacher, course and students (the other tenant).
        south_staff = person("staff@southside.example", "Lee", "Park", born_years_ago=41, staff=True)
        services.membership_grant(user=south_staff, institution=south, role=Role.STAFF)
        south_staff.groups.add(group)
        south_teacher = person("teacher@southside.example", "Ravi", "Shah", born_years_ago=35)
        services.membership_grant(user=south_teacher, institution=south, role=Role.TEACHER)
        south_course = services.course_upsert(institution=south, code="BIO-10", title="Biology 10", term="2026-fall")
        services.enrollment_upsert(course=south_course, user=south_teacher, role=Role.TEACHER)
        for n in range(1, 6):
            s = person(f"student{n:02d}@southside.example", f"South{n:02d}", "Demo", born_years_ago=15)
            services.membership_grant(user=s, institution=south, role=Role.STUDENT, grade_level="10")
            services.enrollment_upsert(course=south_course, user=s, role=Role.STUDENT)

        start = timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        services.live_session_upsert(course=course, title="Science 7 — Cells, live", scheduled_start=start,
                                     created_by=teacher)
        services.live_session_upsert(course=south_course, title="Biology 10 — Genetics, live",
                                     scheduled_start=start, created_by=south_teacher)
        self._seed_exam(course, students[0])

        creator = person("creator@aula.example", "Alex", "Rivera", born_years_ago=29)
        moderator = person("moderator@aula.example", "Jo", "Kim", born_years_ago=31)
        viewer = person("viewer@aula.example", "Pat", "Lee", born_years_ago=24)
        channel = channel_upsert(owner=creator, slug="science-live", title="Science Live with Alex")
        channel_role_grant(channel=channel, user=moderator, role=ChannelRole.Kind.MODERATOR)
        channel_role_grant(channel=channel, user=viewer, role=ChannelRole.Kind.MEMBER)
        stream_upsert(channel=channel, title="Friday night experiments", scheduled_start=start + dt.timedelta(days=2))

        app, _ = Application.objects.update_or_create(
            client_id=DEMO_CLIENT_ID,
            defaults={"name": "Lakeview SIS (demo)", "client_type": Application.CLIENT_CONFIDENTIAL,
                      "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
                      "client_secret": DEMO_CLIENT_SECRET, "hash_client_secret": True},
        )
        DistrictAPIClient.objects.update_or_create(
            application=app, defaults={"district": district, "name": "Lakeview SIS (demo)",
                                       "scopes": "roster.read results.read"},
        )
