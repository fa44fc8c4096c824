"""Aula as an LTI 1.3 tool, driven by the mock LMS in tests/lti/platform.py (a real HTTP server that signs
id_tokens, serves its JWKS, a token endpoint, NRPS and AGS): launch validation and its attacks, landing,
deep linking, roster reconciliation, grade passback through the GradeSync queue, key rotation."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from classrooms import lti_selectors, lti_services
from classrooms import services as classroom_services
from classrooms.models import (
    Enrollment,
    ExternalIdentity,
    LtiContext,
    LtiLaunch,
    LtiPlatform,
    LtiResourceLink,
    LtiToolKey,
    Role,
    User,
)
from exams import services as exam_services
from exams.models import GradeSync
from tests import factories
from tests.lti.platform import MockPlatform, read_form

pytestmark = pytest.mark.django_db(transaction=True)

LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
LAUNCH_URL = settings.AULA_PUBLIC_URL + "/lti/launch/"


@pytest.fixture
def lms(world):
    with MockPlatform(page_size=2) as platform:
        platform.register_tool(login_url=settings.AULA_PUBLIC_URL + "/lti/login/", launch_url=LAUNCH_URL,
                               redirect_uris=[LAUNCH_URL], jwks=lti_selectors.jwks)
        registration = lti_services.platform_save(platform=LtiPlatform(
            district=world.district, name="Mock LMS", issuer=platform.issuer, client_id=platform.client_id,
            deployment_ids=[platform.deployment_id], auth_login_url=platform.auth_url,
            auth_token_url=platform.token_url, keyset_url=platform.jwks_url, trust_email=True))
        platform.aula = registration
        platform.add_context("crs-1", title="Biology 101", label="BIO")
        platform.add_user("t-1", name="Teacher A", given_name="Teacher", family_name="A",
                          email=world.teacher_a.email)
        platform.enroll("crs-1", "t-1", [INSTRUCTOR])
        for n in range(1, 4):
            platform.add_user(f"s-{n}", name=f"Student {n}", given_name="Student", family_name=str(n),
                              email=f"lms-student-{n}@district.test")
            platform.enroll("crs-1", f"s-{n}", [LEARNER])
        yield platform


def _launch(client, lms, *, sub, context_id="crs-1", message_type="LtiResourceLinkRequest",
            resource_link_id=None, tamper=frozenset()):
    """The browser's part of a launch: the LMS's login request, the tool's redirect to the LMS, the LMS's form
    post of the id_token back to the tool."""
    url, params = lms.login_initiation(sub=sub, context_id=context_id, target_link_uri=LAUNCH_URL,
                                       message_type=message_type, resource_link_id=resource_link_id)
    response = client.post("/lti/login/", params)
    assert response.status_code == 302, response.content[:300]
    query = dict(parse_qsl(urlsplit(response["Location"]).query))
    assert response["Location"].startswith(lms.auth_url)
    redirect_uri, form = lms.authorize(query, tamper=frozenset(tamper))
    assert redirect_uri == LAUNCH_URL
    return client.post("/lti/launch/", form)


def _handoff(response) -> str:
    assert response.status_code == 200, response.content[:400]
    return re.search(r'data-testid="lti-continue" href="([^"]+)"', response.content.decode()).group(1)


def _continue(client, response):
    """Follow the launch page's "Open in Aula" hand-off; returns where Aula sends the person."""
    followed = client.get(_handoff(response))
    assert followed.status_code == 302
    return followed["Location"]


def _link_course(client, lms, world):
    """The teacher's first launch from the LMS course: link it to their Aula course."""
    response = _launch(client, lms, sub="t-1", message_type="LtiDeepLinkingRequest")
    action, fields = read_form(response.content.decode())
    assert action == "/lti/deep-link/" and fields["launch"].startswith("lti1p3-launch-")
    response = client.post(action, {"launch": fields["launch"], "course": world.course_a.pk})
    assert response.status_code == 200
    return fields["launch"], response



def _deliver(sync: GradeSync) -> str:
    """One run of the delivery task, as a worker runs it (its retry goes to the broker, where no worker is)."""
    from exams.tasks import grade_sync_deliver

    return grade_sync_deliver.apply(args=[sync.pk]).get()


# --- keys ------------------------------------------------------------------------------------------------------

def test_jwks_publishes_the_signing_key_and_keeps_a_rotated_key_for_the_overlap(client, settings):
    first = lti_services.signing_key()
    keys = client.get("/lti/jwks.json").json()["keys"]
    assert [k["kid"] for k in keys] == [first.kid] and keys[0]["alg"] == "RS256" and "d" not in keys[0]
    assert LtiToolKey.objects.get(pk=first.pk).private_key.reveal().startswith("-----BEGIN PRIVATE KEY-----")
    # Stored encrypted: the column holds a Fernet token, never the PEM.
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT private_key FROM classrooms_ltitoolkey WHERE id = %s", [first.pk])
        assert cur.fetchone()[0].startswith("fernet:")
    second = lti_services.key_rotate()
    # Published at once, signed with only after the publish lead (platforms cache key sets).
    assert {k["kid"] for k in client.get("/lti/jwks.json").json()["keys"]} == {first.kid, second.kid}
    assert lti_services.signing_key().kid == first.kid
    second.created_at = timezone.now() - dt.timedelta(seconds=settings.AULA_LTI_KEY_PUBLISH_SECONDS + 1)
    second.save(update_fields=["created_at"])
    assert lti_services.signing_key().kid == second.kid
    # Past the overlap the old key is unpublished and deleted; a key older than the rotation period is replaced.
    first = LtiToolKey.objects.get(pk=first.pk)
    first.retire_at = timezone.now() - dt.timedelta(seconds=1)
    first.save(update_fields=["retire_at"])
    second.created_at = timezone.now() - dt.timedelta(days=settings.AULA_LTI_KEY_ROTATE_DAYS + 1)
    second.save(update_fields=["created_at"])
    assert lti_services.keys_rotate_due() == {"rotated": True, "removed": 1}
    kids = [k["kid"] for k in client.get("/lti/jwks.json").json()["keys"]]
    assert second.kid in kids and first.kid not in kids and len(kids) == 2
    # A leaked key: replaced at once, every older key unpublished, the new one signs now.
    leak = lti_services.key_rotate(immediate=True)
    assert [k["kid"] for k in client.get("/lti/jwks.json").json()["keys"]] == [leak.kid]
    assert lti_services.signing_key().kid == leak.kid


# --- launch validation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tamper", ["bad_signature", "wrong_aud", "expired", "wrong_iss", "wrong_deployment",
                                    "unknown_kid", "alg_none", "no_nonce", "missing_claims"])
def test_a_forged_or_broken_launch_is_refused_and_changes_nothing(client, lms, world, tamper):
    users = User.objects.count()
    response = _launch(client, lms, sub="s-1", resource_link_id="rl-1", tamper={tamper})
    assert response.status_code in (400, 403)
    assert b"could not be verified" in response.content or b"not registered" in response.content
    assert User.objects.count() == users and not LtiLaunch.objects.exists() and not ExternalIdentity.objects.exists()
    assert "_auth_user_id" not in client.session


def test_a_replayed_id_token_is_refused(client, lms, world):
    _link_course(client, lms, world)
    first = _launch(client, lms, sub="s-1", resource_link_id="rl-1")
    assert first.status_code == 200
    redirect_uri, form = lms.replay_last_id_token()
    replay = client.post("/lti/launch/", form)
    assert replay.status_code == 403 and b"could not be verified" in replay.content
    assert LtiLaunch.objects.filter(message_type="LtiResourceLinkRequest").count() == 1


def test_an_unregistered_platform_or_client_is_refused_at_login(client, lms):
    url, params = lms.login_initiation(sub="s-1", context_id="crs-1", target_link_uri=LAUNCH_URL,
                                       resource_link_id="rl-1")
    response = client.post("/lti/login/", {**params, "client_id": "someone-else"})
    assert response.status_code == 400 and b"not registered" in response.content
    lms.aula.is_active = False
    lti_services.platform_save(platform=lms.aula)
    assert client.post("/lti/login/", params).status_code == 400


def test_a_platform_that_rotated_its_keys_is_still_verified(client, lms, world):
    _link_course(client, lms, world)  # caches the platform's key set
    lms.rotate_keys()
    lms.drop_old_keys()
    response = _launch(client, lms, sub="s-1", resource_link_id="rl-1")
    assert response.status_code == 200, response.content[:300]


# --- landing ---------------------------------------------------------------------------------------------------

def test_a_student_of_an_unlinked_course_is_told_so_and_gets_no_account(client, lms):
    response = _launch(client, lms, sub="s-1", resource_link_id="rl-1")
    assert response.status_code == 403 and b"not connected this course" in response.content
    assert not User.objects.filter(email="lms-student-1@district.test").exists()


def test_a_teacher_links_the_course_and_students_land_in_it_with_their_role(client, lms, world):
    location = _continue(client, _launch(client, lms, sub="t-1", resource_link_id="rl-1"))
    context = LtiContext.objects.get(context_id="crs-1")
    assert location == f"/lti/contexts/{context.pk}/"  # the teacher is asked which Aula course this is
    page = client.get(location)
    assert world.course_a.title in page.content.decode()
    assert world.course_c.title not in page.content.decode()  # another district's course is never offered
    client.post(location, {"course": world.course_c.pk})
    assert LtiContext.objects.get(pk=context.pk).course is None
    client.post(location, {"course": world.course_a.pk})
    assert LtiContext.objects.get(pk=context.pk).course == world.course_a
    # The teacher was matched by email (a person of this district), not given a new account.
    assert ExternalIdentity.objects.get(subject="t-1").user == world.teacher_a

    other = client_class()
    handoff = _handoff(_launch(other, lms, sub="s-2", resource_link_id="rl-1"))
    assert other.get(handoff)["Location"] == "/"
    student = User.objects.get(email="lms-student-2@district.test")
    assert not student.has_usable_password()
    assert Enrollment.objects.get(course=world.course_a, user=student).role == Role.STUDENT
    assert int(other.session["_auth_user_id"]) == student.pk
    assert client_class().get(handoff).status_code == 410  # the hand-off link signs in once
    # A TA role in the LMS becomes a TA enrollment at the next launch.
    lms.enroll("crs-1", "s-2", [TA])
    _continue(other, _launch(other, lms, sub="s-2", resource_link_id="rl-1"))
    assert Enrollment.objects.get(course=world.course_a, user=student).role == Role.TA
    assert LtiLaunch.objects.filter(user=student).count() == 2


def client_class():
    from django.test import Client

    return Client()


def test_an_lms_account_whose_email_belongs_to_another_district_is_not_adopted(client, lms, world):
    _link_course(client, lms, world)
    lms.add_user("s-9", name="Outsider", email=world.student_c.email)
    lms.enroll("crs-1", "s-9", [LEARNER])
    response = _launch(client_class(), lms, sub="s-9", resource_link_id="rl-1")
    assert response.status_code == 403 and b"used by another Aula account" in response.content
    assert not Enrollment.objects.filter(course=world.course_a, user=world.student_c).exists()


def test_an_email_claim_alone_never_hands_over_a_staff_account_or_one_on_an_untrusted_lms(client, lms, world):
    _link_course(client, lms, world)
    lms.add_user("s-8", name="Not Staff", email=world.staff_a.email)  # staff_a has admin access
    lms.enroll("crs-1", "s-8", [LEARNER])
    response = _launch(client_class(), lms, sub="s-8", resource_link_id="rl-1")
    assert response.status_code == 403 and b"used by another Aula account" in response.content
    assert not ExternalIdentity.objects.filter(subject="s-8").exists()
    # The default for a registration: the LMS's addresses are not trusted, even for a student of the district.
    lms.aula.trust_email = False
    lti_services.platform_save(platform=lms.aula)
    lms.add_user("s-7", name="Student A", email=world.student_a.email)
    lms.enroll("crs-1", "s-7", [LEARNER])
    response = _launch(client_class(), lms, sub="s-7", resource_link_id="rl-1")
    assert response.status_code == 403 and b"used by another Aula account" in response.content
    assert not ExternalIdentity.objects.filter(user=world.student_a).exists()


def test_an_lms_subject_known_in_another_district_is_refused(client, lms, world):
    _link_course(client, lms, world)
    ExternalIdentity.objects.create(district=world.other_district, user=world.student_c, kind="lti",
                                    issuer=lms.issuer, subject="s-1")
    response = _launch(client_class(), lms, sub="s-1", resource_link_id="rl-1")
    assert response.status_code == 403 and b"another district" in response.content
    assert not Enrollment.objects.filter(course=world.course_a, user=world.student_c).exists()


# --- deep linking, exam, grade passback (the "done means") -------------------------------------------

def test_deep_linked_exam_taken_from_the_lms_and_its_grade_in_the_gradebook(client, lms, world):
    exam = factories.two_question_exam(world.course_a)
    token, picker = _link_course(client, lms, world)
    assert exam.title in picker.content.decode() and world.session_a.title in picker.content.decode()
    response = client.post("/lti/deep-link/", {"launch": token, "item": [f"exam:{exam.pk}"]})
    assert response.status_code == 200
    action, fields = read_form(response.content.decode())
    assert action == lms.deep_link_return_url
    created = lms.receive_deep_link_response(fields["JWT"])  # the LMS verifies Aula's signature and places it
    assert len(created) == 1
    link = LtiResourceLink.objects.get()
    assert (link.target, link.target_id, link.created_by) == ("exam", exam.pk, world.teacher_a)
    assert lms.deep_links["crs-1"][0]["lineItem"]["resourceId"] == f"aula-exam-{exam.pk}"
    # The picker's launch is spent: the same choice cannot be posted twice.
    assert client.post("/lti/deep-link/", {"launch": token, "item": [f"exam:{exam.pk}"]}).status_code == 410

    student_client = client_class()
    location = _continue(student_client, _launch(student_client, lms, sub="s-1", resource_link_id=created[0]))
    assert location == f"/exams/#exam-{exam.pk}"
    assert f'id="exam-{exam.pk}"' in student_client.get("/exams/").content.decode()  # the row with Start
    student = User.objects.get(email="lms-student-1@district.test")
    link.refresh_from_db()
    assert link.resource_link_id == created[0] and link.lineitem_url  # the LMS's grade column for this link

    attempt = exam_services.attempt_start(exam=exam, student=student)
    q1, q2 = exam.q
    exam_services.answer_save(attempt_id=attempt.pk, student=student, question_id=q1.pk, value=[1], version=1)
    exam_services.answer_save(attempt_id=attempt.pk, student=student, question_id=q2.pk, value=False, version=1)
    exam_services.attempt_submit(attempt_id=attempt.pk, student=student)
    sync = GradeSync.objects.get(attempt=attempt)
    assert sync.lti_link == link and sync.transport == "lti"
    # Until the teacher releases the grades, the LMS gradebook (which students see) hears "submitted", no score.
    assert _deliver(sync) == GradeSync.Status.DELIVERED
    submitted = lms.gradebook("crs-1")[(created[0], "s-1")]
    assert submitted["gradingProgress"] == "Pending" and "scoreGiven" not in submitted
    teacher = client_class()
    teacher.force_login(world.teacher_a)
    assert "submitted; no score sent yet" in teacher.get(f"/exams/{exam.pk}/grading/").content.decode()

    teacher.post(f"/exams/{exam.pk}/grading/release/")  # the teacher releases the grades
    sync.refresh_from_db()
    assert sync.status == GradeSync.Status.PENDING and sync.payload["grading_progress"] == "FullyGraded"
    lms.fail_next("/api/contexts", 1, status=503)  # the LMS is briefly down: retried, not lost
    assert _deliver(sync) == GradeSync.Status.FAILED
    assert _deliver(sync) == GradeSync.Status.DELIVERED
    assert _deliver(sync) == GradeSync.Status.DELIVERED  # no second score
    score = lms.gradebook("crs-1")[(created[0], "s-1")]
    assert (score["scoreGiven"], score["scoreMaximum"]) == (1.0, 2.0)
    assert (score["activityProgress"], score["gradingProgress"]) == ("Completed", "FullyGraded")
    assert len([r for r in lms.requests if r.path.endswith("/scores")]) == 3  # submitted; failed; the grade

    # Every step is in the audit trail.
    def logged(model) -> bool:
        return LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(model)).exists()

    assert logged(LtiResourceLink) and logged(ExternalIdentity) and logged(Enrollment) and logged(GradeSync)
    assert LtiLaunch.objects.filter(user=student, resource_link=link).exists()
    from compliance.models import Disclosure

    # Two disclosures to the LMS: that the attempt was submitted, then its grade (the redelivery adds none).
    assert Disclosure.objects.filter(student=student, receiving_party__contains="Mock LMS").count() == 2


def test_a_grade_the_lms_refuses_is_given_up_and_alerted(client, lms, world):
    from analytics.alerts import grade_sync_evaluate
    from analytics.models import Alert

    exam = factories.two_question_exam(world.course_a)
    token, _ = _link_course(client, lms, world)
    response = client.post("/lti/deep-link/", {"launch": token, "item": [f"exam:{exam.pk}"]})
    created = lms.receive_deep_link_response(read_form(response.content.decode())[1]["JWT"])
    student_client = client_class()
    _continue(student_client, _launch(student_client, lms, sub="s-1", resource_link_id=created[0]))
    student = User.objects.get(email="lms-student-1@district.test")
    attempt = exam_services.attempt_start(exam=exam, student=student)
    exam_services.attempt_submit(attempt_id=attempt.pk, student=student)
    sync = GradeSync.objects.get(attempt=attempt)
    lms.fail_next("/api/contexts", 3, status=500)
    for _ in range(3):
        assert _deliver(sync) == GradeSync.Status.FAILED
    assert grade_sync_evaluate() == ["opened"]
    alert = Alert.objects.get(kind=Alert.Kind.GRADE_SYNC_FAILING)
    assert alert.room_key == f"i{world.school_a.pk}.grades" and alert.last_value == 1
    assert _deliver(sync) == GradeSync.Status.DELIVERED
    assert grade_sync_evaluate() == ["resolved"]
    # A permanent refusal (the LMS says the request is wrong) is not retried eight times.
    lms.fail_next("/api/contexts", 1, status=400)
    sync.payload = {**sync.payload, "timestamp": timezone.now().isoformat()}
    GradeSync.objects.filter(pk=sync.pk).update(status=GradeSync.Status.PENDING, tries=0, payload=sync.payload)
    assert _deliver(sync) == GradeSync.Status.DEAD


def test_class_quiz_results_go_to_the_lms_when_the_session_ends(client, lms, world):
    token, _ = _link_course(client, lms, world)
    response = client.post("/lti/deep-link/", {"launch": token, "item": [f"session:{world.session_a.pk}"]})
    created = lms.receive_deep_link_response(read_form(response.content.decode())[1]["JWT"])
    student_client = client_class()
    location = _continue(student_client, _launch(student_client, lms, sub="s-1", resource_link_id=created[0]))
    assert location == f"/sessions/{world.session_a.pk}/"
    student = User.objects.get(email="lms-student-1@district.test")
    import uuid

    classroom_services.session_start(session=world.session_a, actor=world.teacher_a)
    for n in range(2):
        poll = classroom_services.poll_create(session=world.session_a, actor=world.teacher_a, question=f"Q{n}",
                                              kind="single", options=["a", "b"], quiz=True, correct=[0])
        classroom_services.poll_answer(poll_id=poll.pk, user=student, attempt_id=uuid.uuid4(), positions=[n])
    classroom_services.session_end(session=world.session_a, actor=world.teacher_a)
    assert exam_services.session_quiz_grades_enqueue(session_id=world.session_a.pk) == 1
    sync = GradeSync.objects.get(session=world.session_a, student=student)
    assert _deliver(sync) == GradeSync.Status.DELIVERED
    score = lms.gradebook("crs-1")[(created[0], "s-1")]
    assert (score["scoreGiven"], score["scoreMaximum"]) == (50.0, 100.0)
    assert exam_services.session_quiz_grades_enqueue(session_id=world.session_a.pk) == 1  # idempotent:
    assert GradeSync.objects.filter(session=world.session_a).count() == 1  # the same result is not re-sent
    assert GradeSync.objects.get(pk=sync.pk).status == GradeSync.Status.DELIVERED


# --- roster (NRPS) ---------------------------------------------------------------------------------------------

def test_the_lms_roster_is_reconciled_adds_role_changes_and_drops(client, lms, world):
    _link_course(client, lms, world)
    context = LtiContext.objects.get()
    report = lti_services.roster_sync(context_id=context.pk)
    assert (report["added"], report["dropped"]) == (3, 0)  # three students, over two NRPS pages
    students = {u.email: u for u in User.objects.filter(email__startswith="lms-student-")}
    assert Enrollment.objects.filter(course=world.course_a, user__in=students.values(), is_active=True).count() == 3
    assert lti_services.roster_sync(context_id=context.pk)["added"] == 0  # idempotent

    lms.unenroll("crs-1", "s-1")
    lms.unenroll("crs-1", "s-2", inactive=True)
    lms.enroll("crs-1", "s-3", [TA])
    report = lti_services.roster_sync(context_id=context.pk)
    assert (report["dropped"], report["changed"]) == (2, 1)
    active = dict(Enrollment.objects.filter(course=world.course_a, is_active=True,
                                            user__in=students.values()).values_list("user__email", "role"))
    assert active == {"lms-student-3@district.test": Role.TA}
    # Aula's own enrollments (never seen in this LMS) are not touched.
    assert Enrollment.objects.get(course=world.course_a, user=world.student_a).is_active
    assert LtiContext.objects.get(pk=context.pk).roster_report["dropped"] == 2


def test_a_course_linked_from_two_lms_sections_keeps_both_sections_students(client, lms, world):
    _link_course(client, lms, world)  # crs-1: the teacher and students 1-3
    lms.add_context("crs-2", title="Biology 101 (section 2)")
    lms.enroll("crs-2", "t-1", [INSTRUCTOR])
    lms.add_user("s-4", name="Student 4", email="lms-student-4@district.test")
    lms.enroll("crs-2", "s-4", [LEARNER])
    action, fields = read_form(_launch(client, lms, sub="t-1", context_id="crs-2",
                                       message_type="LtiDeepLinkingRequest").content.decode())
    client.post(action, {"launch": fields["launch"], "course": world.course_a.pk})
    first, second = LtiContext.objects.get(context_id="crs-1"), LtiContext.objects.get(context_id="crs-2")
    assert second.course == world.course_a
    assert lti_services.roster_sync(context_id=first.pk)["added"] == 3
    assert lti_services.roster_sync(context_id=second.pk)["added"] == 1
    for context in (first, second, first):  # each section's sync keeps the other section's students
        assert lti_services.roster_sync(context_id=context.pk)["dropped"] == 0

    def active() -> set[str]:
        return set(Enrollment.objects.filter(course=world.course_a, is_active=True, user__email__startswith="lms-")
                   .values_list("user__email", flat=True))

    assert active() == {f"lms-student-{n}@district.test" for n in range(1, 5)}
    lms.unenroll("crs-2", "s-4")  # gone from the only section they were in: dropped by either section's sync
    assert lti_services.roster_sync(context_id=first.pk)["dropped"] == 1
    assert active() == {f"lms-student-{n}@district.test" for n in range(1, 4)}


def test_a_sis_rostered_course_keeps_its_enrollments_when_the_lms_drops_someone(client, lms, world):
    from compliance.models import RosterLink

    _link_course(client, lms, world)
    context = LtiContext.objects.get()
    lti_services.roster_sync(context_id=context.pk)
    RosterLink.objects.create(district=world.district, kind=RosterLink.Kind.CLASS, sourced_id="cls-1",
                              object_id=world.course_a.pk)
    lms.unenroll("crs-1", "s-1")
    report = lti_services.roster_sync(context_id=context.pk)
    assert report["dropped"] == 0 and report["conflict_count"] == 1
    assert Enrollment.objects.get(course=world.course_a, user__email="lms-student-1@district.test").is_active


def test_the_tool_configuration_names_every_endpoint(client):
    config = client.get("/lti/config.json").json()
    assert config["oidc_initiation_url"].endswith("/lti/login/") and config["jwks_uri"].endswith("/lti/jwks.json")
    assert {m["type"] for m in config["messages"]} == {"LtiResourceLinkRequest", "LtiDeepLinkingRequest"}


def test_dynamic_registration_from_a_district_link(client, world):
    with MockPlatform() as platform:
        platform.add_context("crs-9", title="Chemistry")
        platform.add_user("t-9", name="Teacher", email=world.teacher_a.email)
        platform.enroll("crs-9", "t-9", [INSTRUCTOR])
        invite, token = lti_services.registration_invite_create(district_id=world.district.pk, actor=world.staff_a)
        assert invite.token_hash != token and token not in str(invite.__dict__)  # only a hash is stored
        refused = client.get(f"/lti/register/{token}/", {**platform.registration_start(),
                                                         "registration_token": "forged"})
        assert refused.status_code == 400 and not LtiPlatform.objects.exists()  # the LMS refused: nothing made
        response = client.get(f"/lti/register/{token}/", platform.registration_start())
        assert response.status_code == 200 and b"Aula is registered" in response.content
        registered = LtiPlatform.objects.get()
        assert (registered.district, registered.issuer, registered.client_id, registered.deployment_ids) == (
            world.district, platform.issuer, platform.client_id, [platform.deployment_id])
        sent = platform.dynamic_registrations[0]
        assert sent["jwks_uri"] == settings.AULA_PUBLIC_URL + "/lti/jwks.json"
        assert sent["redirect_uris"] == [LAUNCH_URL]
        # The link is spent; the platform can now launch Aula.
        again = client.get(f"/lti/register/{token}/", platform.registration_start())
        assert again.status_code == 400 and b"already used" in again.content
        platform.tool.jwks = lti_selectors.jwks  # (the test has no live server at AULA_PUBLIC_URL to fetch from)
        assert not registered.trust_email  # the district admin decides whether the LMS's addresses link accounts
        registered.trust_email = True
        lti_services.platform_save(platform=registered)
        launched = _launch(client_class(), platform, sub="t-9", context_id="crs-9", resource_link_id="rl-9")
        assert launched.status_code == 200 and LtiLaunch.objects.filter(platform=registered).exists()
