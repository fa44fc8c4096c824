"""The LMS flow of issue 10 end to end, with real parts only: Aula on a real uvicorn process (AULA_PUBLIC_URL = its
address), a real Celery worker, the mock LMS (tests/lti/platform.py, a real HTTP server signing real JWTs) and
Chromium driven by Playwright.

A teacher adds an Aula exam to an LMS course through deep linking; a student opens it from the LMS, takes it in
the exam page and submits; the worker sends the grade to the LMS gradebook (AGS). A forged launch is refused in
the browser and signs nobody in. Waits are on locators and on bounded polls, never on sleeps.
"""

from __future__ import annotations

import re

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from playwright.sync_api import expect

from classrooms import lti_services
from classrooms.models import Enrollment, ExternalIdentity, LtiContext, LtiLaunch, LtiPlatform, LtiResourceLink, User
from exams import services as exam_services
from exams.models import Attempt, GradeSync
from tests import factories
from tests.e2e.browser import browser, db
from tests.e2e.ltikit import Worker, aula_server, wait_until
from tests.lti.platform import ROLE_INSTRUCTOR, ROLE_LEARNER, MockPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 20000
GRADE_SECONDS = 90  # the worker picks the delivery up within seconds; this bounds the poll, it is not a timing
STUDENT_EMAIL = "lms-student-1@district.test"


@pytest.fixture
def aula(server_factory):
    return aula_server(server_factory)


@pytest.fixture
def lms(world, aula):
    """The mock LMS, registered with the tool running in `aula` (Aula's keys read over HTTP from its JWKS URL),
    and its LtiPlatform row; a course with one teacher (Aula's teacher_a, matched by email) and one student
    unknown to Aula."""
    launch_url = aula.origin + "/lti/launch/"
    with MockPlatform() as platform:
        platform.register_tool(login_url=aula.origin + "/lti/login/", launch_url=launch_url,
                               redirect_uris=[launch_url], jwks_url=aula.origin + "/lti/jwks.json")
        platform.aula = lti_services.platform_save(platform=LtiPlatform(
            district=world.district, name="Mock LMS", issuer=platform.issuer, client_id=platform.client_id,
            deployment_ids=[platform.deployment_id], auth_login_url=platform.auth_url,
            auth_token_url=platform.token_url, keyset_url=platform.jwks_url, trust_email=True))
        platform.tool_launch_url = launch_url  # Aula's launch URL, as registered in the LMS
        platform.add_context("crs-1", title="Biology 101", label="BIO")
        platform.add_user("t-1", name="Teacher A", given_name="Teacher", family_name="A", email=world.teacher_a.email)
        platform.enroll("crs-1", "t-1", [ROLE_INSTRUCTOR])
        platform.add_user("s-1", name="Student One", given_name="Student", family_name="One", email=STUDENT_EMAIL)
        platform.enroll("crs-1", "s-1", [ROLE_LEARNER])
        yield platform
        assert platform.server_errors == []


@pytest.fixture
def worker(aula, tmp_path):
    w = Worker(tmp_path, aula.port)
    yield w
    w.stop()



def new_page(b):
    page = b.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.navigations = []
    page.on("request", lambda r: r.is_navigation_request() and page.navigations.append(r.url))
    return page


def question(page, q):
    return page.locator(f'[data-testid="question"][data-question-id="{q.pk}"]')


def signed_in_user_id(page, aula) -> int | None:
    """Who Aula thinks this browser is: the session behind its cookie (read from the session store)."""
    from django.conf import settings
    from django.contrib.sessions.backends.base import SessionBase
    from django.utils.module_loading import import_string

    cookie = next((c["value"] for c in page.context.cookies(aula.origin)
                   if c["name"] == settings.SESSION_COOKIE_NAME), None)
    if cookie is None:
        return None
    store: SessionBase = import_string(settings.SESSION_ENGINE + ".SessionStore")(session_key=cookie)
    user_id = db(lambda: store.get("_auth_user_id"))
    return int(user_id) if user_id else None


def landed(response, aula) -> bool:
    """The first page of Aula a launch hands the browser on to (past the /lti/ pages)."""
    return (response.request.is_navigation_request() and response.url.startswith(aula.origin + "/")
            and "/lti/" not in response.url and response.status not in (301, 302, 303))


def test_exam_placed_by_deep_linking_taken_from_the_lms_and_graded_into_its_gradebook(world, aula, lms, worker):
    exam = factories.two_question_exam(world.course_a)
    with browser() as b:
        # --- The teacher, in the LMS course, adds Aula content (deep linking); nobody is signed in to Aula.
        teacher = new_page(b)
        teacher.goto(lms.launch_page_url(sub="t-1", context_id="crs-1", target_link_uri=lms.tool_launch_url,
                                         message_type="LtiDeepLinkingRequest"))
        # The LMS page posts the login initiation, Aula redirects to the LMS's /auth, which posts the signed
        # id_token back: the picker asks first which Aula course this LMS course is.
        expect(teacher.get_by_role("heading")).to_have_text("Add Aula to “Biology 101”")
        assert teacher.url == lms.tool_launch_url
        course = teacher.get_by_label("Aula course")
        expect(course.locator("option")).to_have_count(1)  # only the teacher's own course of this district
        course.select_option(str(world.course_a.pk))
        teacher.get_by_role("button", name="Link course").click()
        picker = teacher.get_by_test_id("lti-picker")
        expect(teacher.locator("main strong")).to_have_text(world.course_a.title)  # "Linked to the Aula course …"
        expect(picker).to_contain_text(world.session_a.title)  # the course's sessions and exams are offered
        picker.get_by_label(re.compile(exam.title)).check()
        picker.get_by_role("button", name="Add to course").click()
        # Aula's signed LtiDeepLinkingResponse is auto-posted to the LMS, which verifies it and places the link.
        teacher.wait_for_url(lms.deep_link_return_url)
        expect(teacher.get_by_role("heading")).to_have_text("Content added")
        created = teacher.locator("#created li").all_inner_texts()
        assert len(created) == 1, created
        link_id = created[0]
        placed = lms.resource_links("crs-1")[link_id]
        assert placed["title"] == exam.title and placed["url"] == lms.tool_launch_url and placed["lineitem"]
        assert lms.deep_links["crs-1"][0]["lineItem"]["resourceId"] == f"aula-exam-{exam.pk}"
        context = db(LtiContext.objects.get, platform=lms.aula, context_id="crs-1")
        assert context.course_id == world.course_a.pk
        link = db(LtiResourceLink.objects.get, context=context)
        assert (link.target, link.target_id, link.created_by_id) == ("exam", exam.pk, world.teacher_a.pk)
        assert teacher.errors == []

        # --- The student opens the placed link from the LMS. The launch is the whole page (not in an iframe),
        # so Aula's hand-off page sends them on by itself: signed in, to where the link points.
        student = new_page(b)
        with student.expect_response(lambda r: landed(r, aula), timeout=WAIT_MS) as landing_info:
            student.goto(lms.launch_page_url(sub="s-1", context_id="crs-1", target_link_uri=lms.tool_launch_url,
                                             resource_link_id=link_id))
        landing = landing_info.value
        account = db(User.objects.get, email=STUDENT_EMAIL)
        assert signed_in_user_id(student, aula) == account.pk
        assert not account.has_usable_password()
        assert db(Enrollment.objects.get, course=world.course_a, user=account).is_active
        # It went through Aula's hand-off ("Open in Aula"), whose link signs in once only.
        handoff = next(u for u in student.navigations if "/lti/continue/" in u)
        stranger = new_page(b)
        stranger.goto(handoff)
        expect(stranger.get_by_test_id("lti-refused")).to_contain_text("expired or was already used")
        assert signed_in_user_id(stranger, aula) is None
        # The link lands on the exam's row in the exam list (starting an attempt is a deliberate POST, never a
        # side effect of opening a link: a second launch must not restart the clock).
        assert landing.status == 200 and landing.url.split("#")[0] == aula.origin + "/exams/", landing.url
        assert student.url.endswith(f"/exams/#exam-{exam.pk}")
        student.locator(f'[data-testid="exam-row"][data-exam-id="{exam.pk}"]').get_by_test_id("start").click()
        student.wait_for_url(re.compile(r"/attempts/\d+/$"))
        expect(student.get_by_test_id("connection-state")).to_have_attribute("data-state", "live")
        attempt = db(Attempt.objects.get, exam=exam, student=account)

        # --- Answers in the exam page: one right, one wrong; each saved by the server before submitting.
        q1, q2 = exam.q
        question(student, q1).get_by_label("4", exact=True).check()
        question(student, q2).get_by_label("False", exact=True).check()
        for q in (q1, q2):
            expect(question(student, q).get_by_test_id("save-state")).to_have_text("Saved")
        student.get_by_test_id("submit").click()
        expect(student.get_by_test_id("submit-summary")).to_contain_text("You answered 2 of 2 questions")
        student.get_by_test_id("submit-confirm").click()
        expect(student.get_by_test_id("attempt-state")).to_contain_text("Submitted")
        assert student.errors == []

    # --- The worker tells the LMS "submitted" (no score: the grades are not released), then the teacher
    # releases them and the worker delivers the grade; the test only watches the LMS gradebook.
    def score(graded: bool):
        assert worker.alive(), worker.log_tail()
        entry = lms.gradebook("crs-1").get((link_id, "s-1"))
        return entry if entry and ("scoreGiven" in entry) == graded else None

    submitted = wait_until(lambda: score(False), timeout=GRADE_SECONDS, what="the LMS gradebook to hear 'submitted'",
                           detail=worker.log_tail)
    assert submitted["gradingProgress"] == "Pending"
    db(exam_services.grades_release, exam=exam, actor=world.teacher_a)
    given = wait_until(lambda: score(True), timeout=GRADE_SECONDS, what="the LMS gradebook to hold the student's score",
                       detail=worker.log_tail)
    assert (given["scoreGiven"], given["scoreMaximum"]) == (1.0, 2.0)
    assert (given["activityProgress"], given["gradingProgress"]) == ("Completed", "FullyGraded")
    item = next(i for i in lms.lineitems.values() if i.get("resourceLinkId") == link_id)
    assert item["scoreMaximum"] == 100 and item["resourceId"] == f"aula-exam-{exam.pk}"

    # --- The audit trail: both launches, the delivered grade, its FERPA disclosure, the audit log.
    sync = wait_until(lambda: db(GradeSync.objects.filter(attempt=attempt, status=GradeSync.Status.DELIVERED,
                                                          payload__grading_progress="FullyGraded").first),
                      timeout=GRADE_SECONDS, what="the GradeSync row to say DELIVERED")
    assert sync.lti_link_id == link.pk and sync.transport == "lti"
    launches = db(lambda: list(LtiLaunch.objects.filter(platform=lms.aula).values_list("user_id", "message_type",
                                                                                        "resource_link_id")))
    assert sorted(launches, key=str) == sorted([(world.teacher_a.pk, "LtiDeepLinkingRequest", None),
                                                (account.pk, "LtiResourceLinkRequest", link.pk)], key=str)
    from compliance.models import Disclosure

    # Two disclosures: the "submitted" notice and the grade.
    disclosures = wait_until(lambda: db(lambda: list(Disclosure.objects.filter(student=account))[1:] and
                                        list(Disclosure.objects.filter(student=account))),
                             timeout=GRADE_SECONDS, what="the two disclosure records")
    assert len(disclosures) == 2 and all("Mock LMS" in d.receiving_party for d in disclosures)

    def logged(model) -> bool:
        return db(LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(model)).exists)

    assert logged(LtiResourceLink) and logged(ExternalIdentity) and logged(Enrollment) and logged(GradeSync)
    # Two scores reached the LMS ("submitted", then the grade): no delivery is repeated.
    assert len([r for r in lms.requests if r.path.endswith("/scores")]) == 2


def test_a_forged_launch_shows_the_refusal_and_signs_nobody_in(world, aula, lms):
    users = db(User.objects.count)
    with browser() as b:
        page = new_page(b)
        lms.auth_tamper = frozenset({"bad_signature"})  # the id_token is signed by a key not in the LMS's JWKS
        page.goto(lms.launch_page_url(sub="t-1", context_id="crs-1", target_link_uri=lms.tool_launch_url,
                                      resource_link_id="rl-1"))
        expect(page.get_by_test_id("lti-refused")).to_contain_text("could not be verified")
        expect(page.get_by_role("heading")).to_have_text("Aula cannot open this")
        assert page.url == lms.tool_launch_url and lms.last_launch["tamper"] == {"bad_signature"}
        assert signed_in_user_id(page, aula) is None
        page.goto(aula.origin + "/")
        assert "/accounts/login/" in page.url  # Aula's pages ask this browser to sign in
        assert db(User.objects.count) == users
        assert not db(LtiLaunch.objects.exists) and not db(ExternalIdentity.objects.exists)

        # The same launch, signed as the LMS publishes, is accepted: the refusal was the signature's doing.
        lms.auth_tamper = frozenset()
        page.goto(lms.launch_page_url(sub="t-1", context_id="crs-1", target_link_uri=lms.tool_launch_url,
                                      resource_link_id="rl-1"))
        page.wait_for_url(re.compile(re.escape(aula.origin) + r"/lti/contexts/\d+/$"))
        expect(page.get_by_test_id("lti-link-form")).to_be_visible()
        assert signed_in_user_id(page, aula) == world.teacher_a.pk
        assert page.errors == []
