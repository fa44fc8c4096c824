"""Django admin tenant scoping: school staff see and change only their own institution's rows.

Real HTTP through django.test.Client against the real admin site; data from `tests.factories.World`.
"""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from classrooms import services
from classrooms.management.commands.seed_demo import staff_group
from classrooms.models import Course, Enrollment, LiveSession, Membership, Role, User
from exams.services import exam_upsert
from tests import factories

pytestmark = pytest.mark.django_db

MODELS = {
    "course": "classrooms_course",
    "enrollment": "classrooms_enrollment",
    "livesession": "classrooms_livesession",
    "membership": "classrooms_membership",
    "user": "classrooms_user",
    "institution": "classrooms_institution",
    "exam": "exams_exam",
}


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:{MODELS[model]}_{view}", args=args)


def password_url(user_id: int) -> str:
    return reverse("admin:auth_user_password_change", args=[user_id])


@pytest.fixture
def exams(world):
    return {name: exam_upsert(course=getattr(world, f"course_{name}"), title=f"Exam {name.upper()}")
            for name in "abc"}


@pytest.fixture
def as_staff_a(client, world):
    client.force_login(world.staff_a)
    return client


@pytest.fixture
def as_superuser(client, world):
    client.force_login(factories.user("root", superuser=True))
    return client


@pytest.fixture
def district_admin(world):
    u = factories.user("district_admin", staff=True)
    services.district_admin_grant(user=u, district=world.district)
    u.groups.add(staff_group())
    return u


def rows(response) -> list:
    assert response.status_code == 200, response.content[:500]
    return list(response.context["cl"].result_list)


def institutions_of(objects) -> set[int]:
    return {o.institution_id for o in objects}


def assert_missing(client, response, obj) -> None:
    """Django admin answers a change view for an object outside get_queryset() with a redirect to the index
    and a "doesn't exist" message; the object's data must appear nowhere."""
    assert response.status_code == 302, response.status_code
    assert response["Location"] == reverse("admin:index")
    page = client.get(response["Location"])
    text = page.content.decode()
    assert "doesn’t exist" in text or "doesn't exist" in text
    assert str(obj) not in text


# --- changelists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["course", "enrollment", "livesession", "membership", "exam"])
def test_changelist_shows_only_own_school(as_staff_a, world, exams, model):
    objects = rows(as_staff_a.get(url(model, "changelist")))
    assert objects, "staff A should see school A rows"
    assert institutions_of(objects) == {world.school_a.pk}
    html = as_staff_a.get(url(model, "changelist")).content.decode()
    for other in ("SCI-B", "SCI-C", "Live B", "Live C", "student_b", "student_c", "Exam B", "Exam C"):
        assert other not in html


def test_course_changelist_content(as_staff_a, world):
    html = as_staff_a.get(url("course", "changelist")).content.decode()
    assert "SCI-A" in html
    assert world.course_a.title in html


def test_user_changelist_shows_only_people_of_own_school(as_staff_a, world):
    usernames = {u.username for u in rows(as_staff_a.get(url("user", "changelist")))}
    assert usernames == {"teacher_a", "student_a", "staff_a"}


def test_institution_changelist_shows_only_own_school(as_staff_a, world):
    assert [i.pk for i in rows(as_staff_a.get(url("institution", "changelist")))] == [world.school_a.pk]


def test_superuser_sees_every_school(as_superuser, world, exams):
    for model in ("course", "enrollment", "livesession", "membership", "exam"):
        assert institutions_of(rows(as_superuser.get(url(model, "changelist")))) == {
            world.school_a.pk, world.school_b.pk, world.school_c.pk}
    usernames = {u.username for u in rows(as_superuser.get(url("user", "changelist")))}
    assert {"student_a", "student_b", "student_c", "outsider", "root"} <= usernames
    response = as_superuser.get(url("course", "change", world.course_c.pk))
    assert response.status_code == 200
    assert world.course_c.title in response.content.decode()


def test_district_admin_sees_both_schools_of_the_district_only(client, world, district_admin):
    client.force_login(district_admin)
    for model in ("course", "enrollment", "livesession", "membership"):
        assert institutions_of(rows(client.get(url(model, "changelist")))) == {world.school_a.pk, world.school_b.pk}
    usernames = {u.username for u in rows(client.get(url("user", "changelist")))}
    assert {"student_a", "student_b", "staff_b"} <= usernames
    assert "student_c" not in usernames
    assert client.get(url("course", "change", world.course_b.pk)).status_code == 200
    assert_missing(client, client.get(url("course", "change", world.course_c.pk)), world.course_c)


@pytest.fixture
def guardianships(world):
    parent_a, parent_c = factories.user("parent_a"), factories.user("parent_c")
    return [services.guardianship_link(guardian=parent_a, student=world.student_a, institution=world.school_a),
            services.guardianship_link(guardian=parent_c, student=world.student_c, institution=world.school_c)]


def test_guardianships_are_scoped(as_staff_a, world, guardianships):
    mine, theirs = guardianships
    assert rows(as_staff_a.get(reverse("admin:classrooms_guardianship_changelist"))) == [mine]
    assert rows(as_staff_a.get(reverse("admin:classrooms_guardianship_changelist"), {"q": "example.test"})) == [mine]
    assert_missing(as_staff_a, as_staff_a.get(reverse("admin:classrooms_guardianship_change", args=[theirs.pk])),
                   theirs)
    # The guardian of a school-A student is one of school A's people; school C's parent is not.
    usernames = {u.username for u in rows(as_staff_a.get(url("user", "changelist")))}
    assert "parent_a" in usernames and "parent_c" not in usernames
    assert autocomplete(as_staff_a, "guardianship", "guardian", "parent") == [str(mine.guardian_id)]


def test_forged_guardianship_in_other_school_is_rejected(as_staff_a, world, guardianships):
    response = as_staff_a.post(reverse("admin:classrooms_guardianship_add"), {
        "guardian": guardianships[0].guardian_id, "student": world.student_a.pk, "institution": world.school_c.pk,
        "relationship": "parent"})
    assert response.status_code == 200
    assert "institution" in form_of(response).errors
    guardianships[0].refresh_from_db()
    assert guardianships[0].institution_id == world.school_a.pk


# --- change, history and delete views of another tenant's objects ---------------------------------------


@pytest.mark.parametrize(("model", "attr"), [
    ("course", "course_b"), ("course", "course_c"), ("livesession", "session_b"), ("livesession", "session_c"),
    ("institution", "school_b"), ("institution", "school_c"), ("user", "student_b"), ("user", "student_c"),
])
def test_change_view_of_other_tenant_is_missing(as_staff_a, world, model, attr):
    obj = getattr(world, attr)
    assert_missing(as_staff_a, as_staff_a.get(url(model, "change", obj.pk)), obj)
    assert_missing(as_staff_a, as_staff_a.get(url(model, "history", obj.pk)), obj)


def test_change_view_of_other_tenant_enrollment_and_membership_is_missing(as_staff_a, world):
    enrollment = Enrollment.objects.get(course=world.course_b, user=world.student_b)
    membership = Membership.objects.get(user=world.staff_b)
    assert_missing(as_staff_a, as_staff_a.get(url("enrollment", "change", enrollment.pk)), enrollment)
    assert_missing(as_staff_a, as_staff_a.get(url("membership", "change", membership.pk)), membership)


def test_post_to_other_tenant_change_view_changes_nothing(as_staff_a, world):
    data = {"institution": world.school_b.pk, "code": "HACKED", "title": "Hacked", "term": "t1",
            "is_active": "on", "enrollments-TOTAL_FORMS": "0", "enrollments-INITIAL_FORMS": "0"}
    response = as_staff_a.post(url("course", "change", world.course_b.pk), data)
    assert_missing(as_staff_a, response, world.course_b)
    world.course_b.refresh_from_db()
    assert world.course_b.code == "SCI-B"

    response = as_staff_a.post(url("user", "change", world.student_c.pk),
                               {"username": "pwned", "email": "pwned@example.test"})
    assert_missing(as_staff_a, response, world.student_c)
    world.student_c.refresh_from_db()
    assert world.student_c.username == "student_c"


def test_other_tenant_password_change_is_refused(as_staff_a, world):
    response = as_staff_a.post(password_url(world.student_c.pk),
                               {"password1": "a-new-password-123", "password2": "a-new-password-123"})
    assert response.status_code in (302, 404)
    world.student_c.refresh_from_db()
    assert world.student_c.check_password(factories.PASSWORD)


def test_own_school_change_view_works(as_staff_a, world):
    response = as_staff_a.get(url("course", "change", world.course_a.pk))
    assert response.status_code == 200
    assert world.course_a.title in response.content.decode()


# --- privilege: school staff cannot take over better-privileged accounts --------------------------------


def test_staff_cannot_change_a_superuser_in_their_school(as_staff_a, world):
    root = factories.user("platform_root", superuser=True)
    factories.enroll(world.course_a, root, Role.TEACHER)
    assert root in rows(as_staff_a.get(url("user", "changelist")))  # visible: they teach here
    response = as_staff_a.post(password_url(root.pk),
                               {"password1": "owned-by-staff-123", "password2": "owned-by-staff-123"})
    assert response.status_code == 403
    response = as_staff_a.post(url("user", "change", root.pk), {"username": "root2", "email": "evil@example.test"})
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.check_password(factories.PASSWORD)
    assert root.email == "platform_root@example.test"


def test_staff_cannot_change_staff_of_another_school(as_staff_a, world):
    # staff_b also teaches a class at school A, so staff A sees them, but may not reset their password.
    factories.enroll(world.course_a, world.staff_b, Role.TEACHER)
    response = as_staff_a.post(password_url(world.staff_b.pk),
                               {"password1": "owned-by-staff-123", "password2": "owned-by-staff-123"})
    assert response.status_code == 403
    world.staff_b.refresh_from_db()
    assert world.staff_b.check_password(factories.PASSWORD)


def test_staff_can_reset_a_student_password(as_staff_a, world):
    response = as_staff_a.post(password_url(world.student_a.pk),
                               {"password1": "a-new-password-123", "password2": "a-new-password-123"})
    assert response.status_code == 302
    world.student_a.refresh_from_db()
    assert world.student_a.check_password("a-new-password-123")


# --- search, autocomplete, raw-id popups, list filters -------------------------------------------------


@pytest.mark.parametrize(("model", "term"), [
    ("course", "SCI"), ("course", "Course"), ("enrollment", "student"), ("enrollment", "SCI"),
    ("livesession", "Live"), ("membership", "staff"), ("membership", "example.test"), ("exam", "Exam"),
])
def test_search_never_returns_other_tenant_rows(as_staff_a, world, exams, model, term):
    found = rows(as_staff_a.get(url(model, "changelist"), {"q": term}))
    assert found
    assert institutions_of(found) == {world.school_a.pk}


def test_user_search_is_scoped(as_staff_a, world):
    found = {u.username for u in rows(as_staff_a.get(url("user", "changelist"), {"q": "student"}))}
    assert found == {"student_a"}
    assert rows(as_staff_a.get(url("user", "changelist"), {"q": "outsider"})) == []


def autocomplete(client, model_name: str, field_name: str, term: str, app_label: str = "classrooms") -> list[str]:
    response = client.get(reverse("admin:autocomplete"), {
        "app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term})
    assert response.status_code == 200, response.content[:300]
    return [r["id"] for r in response.json()["results"]]


def test_autocomplete_of_courses_is_scoped(as_staff_a, world):
    assert autocomplete(as_staff_a, "enrollment", "course", "SCI") == [str(world.course_a.pk)]
    assert autocomplete(as_staff_a, "livesession", "course", "SCI") == [str(world.course_a.pk)]
    assert autocomplete(as_staff_a, "exam", "course", "SCI", app_label="exams") == [str(world.course_a.pk)]
    assert autocomplete(as_staff_a, "enrollment", "course", "SCI-B") == []


def test_autocomplete_of_users_is_scoped(as_staff_a, world):
    assert autocomplete(as_staff_a, "enrollment", "user", "student") == [str(world.student_a.pk)]
    assert autocomplete(as_staff_a, "membership", "user", "outsider") == []


def test_autocomplete_for_superuser_and_district_admin(client, as_superuser, world, district_admin):
    every = {str(world.course_a.pk), str(world.course_b.pk), str(world.course_c.pk)}
    assert set(autocomplete(as_superuser, "enrollment", "course", "SCI")) == every
    client.force_login(district_admin)
    assert set(autocomplete(client, "enrollment", "course", "SCI")) == every - {str(world.course_c.pk)}


@pytest.mark.parametrize("model", ["course", "livesession", "enrollment"])
def test_raw_id_popup_is_scoped(as_staff_a, world, model):
    popup = {"_to_field": "id", "_popup": "1"}
    assert institutions_of(rows(as_staff_a.get(url(model, "changelist"), popup))) == {world.school_a.pk}
    assert institutions_of(rows(as_staff_a.get(url(model, "changelist"), {**popup, "q": "SCI"}))) <= {
        world.school_a.pk}


def test_user_raw_id_popup_is_scoped(as_staff_a, world):
    found = {u.username for u in rows(as_staff_a.get(url("user", "changelist"), {"_to_field": "id", "_popup": "1"}))}
    assert found == {"teacher_a", "student_a", "staff_a"}


def filter_choices(response, field: str) -> list:
    """The choices a list filter offers ([] when Django hides it because there is nothing to choose)."""
    for spec in response.context["cl"].filter_specs:
        if getattr(spec, "field_path", None) == field:
            return [pk for pk, _ in spec.lookup_choices]
    return []


@pytest.mark.parametrize("model", ["course", "enrollment", "livesession", "membership", "exam"])
def test_institution_filter_lists_only_own_school(as_staff_a, world, exams, model):
    response = as_staff_a.get(url(model, "changelist"))
    assert set(filter_choices(response, "institution")) <= {world.school_a.pk}
    html = response.content.decode()
    assert f"institution__id__exact={world.school_b.pk}\"" not in html
    assert f"institution__id__exact={world.school_c.pk}\"" not in html


@pytest.mark.parametrize("model", ["course", "enrollment", "livesession", "membership", "exam"])
def test_institution_filter_for_district_admin(client, world, exams, district_admin, model):
    client.force_login(district_admin)
    response = client.get(url(model, "changelist"))
    assert set(filter_choices(response, "institution")) == {world.school_a.pk, world.school_b.pk}
    assert world.school_c.name not in response.content.decode()


def test_district_filter_of_institutions_is_scoped(client, world, district_admin):
    services.institution_upsert(district=world.other_district, slug="other-school-2", name="Other 2")
    client.force_login(district_admin)
    response = client.get(url("institution", "changelist"))
    assert {i.pk for i in rows(response)} == {world.school_a.pk, world.school_b.pk}
    assert set(filter_choices(response, "district")) <= {world.district.pk}
    assert world.other_district.name not in response.content.decode()


def test_filtering_by_another_school_shows_no_other_school_rows(as_staff_a, client, world, district_admin):
    response = as_staff_a.get(url("course", "changelist"), {"institution__id__exact": world.school_b.pk})
    assert institutions_of(rows(response)) <= {world.school_a.pk}
    client.force_login(district_admin)
    response = client.get(url("course", "changelist"), {"institution__id__exact": world.school_c.pk})
    assert rows(response) == []


def test_term_filter_values_come_from_own_school(as_staff_a, world):
    services.course_upsert(institution=world.school_b, code="ART-B", title="Art", term="secret-term-b")
    html = as_staff_a.get(url("course", "changelist")).content.decode()
    assert "secret-term-b" not in html


# --- add forms: foreign-key choices and forged posts -----------------------------------------------------


def form_of(response):
    assert response.status_code == 200
    return response.context["adminform"].form


def test_add_form_choices_are_scoped(as_staff_a, world):
    enrollment_form = form_of(as_staff_a.get(url("enrollment", "add")))
    assert list(enrollment_form.fields["course"].queryset) == [world.course_a]
    assert "institution" not in enrollment_form.fields
    users = set(enrollment_form.fields["user"].queryset.values_list("username", flat=True))
    assert users == {"teacher_a", "student_a", "staff_a"}

    course_form = form_of(as_staff_a.get(url("course", "add")))
    assert list(course_form.fields["institution"].queryset) == [world.school_a]

    session_form = form_of(as_staff_a.get(url("livesession", "add")))
    assert list(session_form.fields["course"].queryset) == [world.course_a]

    membership_form = form_of(as_staff_a.get(url("membership", "add")))
    assert list(membership_form.fields["institution"].queryset) == [world.school_a]

    exam_form = form_of(as_staff_a.get(url("exam", "add")))
    assert list(exam_form.fields["course"].queryset) == [world.course_a]


def test_add_form_prefilled_with_other_tenant_course_does_not_show_it(as_staff_a, world):
    html = as_staff_a.get(url("enrollment", "add"), {"course": world.course_b.pk}).content.decode()
    assert "SCI-B" not in html
    assert world.course_b.title not in html


def test_forged_enrollment_in_other_school_course_is_rejected(as_staff_a, world):
    before = Enrollment.objects.count()
    response = as_staff_a.post(url("enrollment", "add"), {
        "course": world.course_b.pk, "user": world.student_a.pk, "role": "student", "is_active": "on"})
    assert response.status_code == 200
    assert "course" in form_of(response).errors
    assert Enrollment.objects.count() == before
    assert not Enrollment.objects.filter(course=world.course_b, user=world.student_a).exists()


def test_forged_enrollment_of_other_tenant_user_is_rejected(as_staff_a, world):
    response = as_staff_a.post(url("enrollment", "add"), {
        "course": world.course_a.pk, "user": world.student_c.pk, "role": "student", "is_active": "on"})
    assert response.status_code == 200
    assert "user" in form_of(response).errors
    assert not Enrollment.objects.filter(user=world.student_c, course=world.course_a).exists()


def test_forged_enrollment_with_institution_field_is_ignored(as_staff_a, world):
    # `institution` is not a form field: it always follows the course.
    new_student = factories.user("new_student", age=14)
    services.membership_grant(user=new_student, institution=world.school_a, role=Role.STUDENT)
    response = as_staff_a.post(url("enrollment", "add"), {
        "course": world.course_a.pk, "user": new_student.pk, "role": "student", "is_active": "on",
        "institution": world.school_b.pk})
    assert response.status_code == 302
    enrollment = Enrollment.objects.get(user=new_student)
    assert enrollment.course == world.course_a
    assert enrollment.institution_id == world.school_a.pk


def test_forged_course_in_other_school_is_rejected(as_staff_a, world):
    response = as_staff_a.post(url("course", "add"), {
        "institution": world.school_b.pk, "code": "FORGED", "title": "Forged", "term": "t1", "is_active": "on",
        "enrollments-TOTAL_FORMS": "0", "enrollments-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    assert "institution" in form_of(response).errors
    assert not Course.objects.filter(code="FORGED").exists()


def test_forged_live_session_in_other_school_course_is_rejected(as_staff_a, world):
    response = as_staff_a.post(url("livesession", "add"), {
        "course": world.course_c.pk, "title": "Forged session", "status": "scheduled"})
    assert response.status_code == 200
    assert "course" in form_of(response).errors
    assert not LiveSession.objects.filter(title="Forged session").exists()


def test_forged_membership_in_other_school_is_rejected(as_staff_a, world):
    response = as_staff_a.post(url("membership", "add"), {
        "user": world.student_a.pk, "institution": world.school_b.pk, "role": "staff", "is_active": "on"})
    assert response.status_code == 200
    assert "institution" in form_of(response).errors
    assert not Membership.objects.filter(user=world.student_a, institution=world.school_b).exists()


def test_valid_add_goes_through_services_and_is_audited(as_staff_a, world):
    response = as_staff_a.post(url("livesession", "add"), {
        "course": world.course_a.pk, "title": "Made in admin", "status": "scheduled"})
    assert response.status_code == 302, form_of(response).errors
    session = LiveSession.objects.get(title="Made in admin")
    assert session.institution_id == world.school_a.pk
    assert session.created_by == world.staff_a
    entry = LogEntry.objects.get_for_object(session).get()
    assert entry.actor == world.staff_a


def changeform_data(response) -> dict:
    """The POST body the admin change form would send as rendered (main form plus inline formsets)."""
    data = {}

    def add(form):
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None or value is False:
                continue
            key = form.add_prefix(name)
            if isinstance(value, list | tuple):
                data[key] = [str(v) for v in value]
            else:
                data[key] = "on" if value is True else str(value)

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[formset.management_form.add_prefix(name)] = str(value)
        for form in formset.initial_forms:
            add(form)
    return data


def test_course_move_to_other_school_is_rejected(as_staff_a, world):
    data = changeform_data(as_staff_a.get(url("course", "change", world.course_a.pk)))
    data["institution"] = str(world.school_b.pk)
    response = as_staff_a.post(url("course", "change", world.course_a.pk), data)
    assert response.status_code == 200
    assert "institution" in form_of(response).errors
    world.course_a.refresh_from_db()
    assert world.course_a.institution_id == world.school_a.pk


def test_inline_enrollment_of_other_tenant_user_is_rejected(as_staff_a, world):
    """Enrolling someone from another district through the course page would make them "a person of
    school A" — visible and editable (password included) by school A's staff."""
    data = changeform_data(as_staff_a.get(url("course", "change", world.course_a.pk)))
    total = int(data["enrollments-TOTAL_FORMS"])
    data.update({"enrollments-TOTAL_FORMS": str(total + 1), f"enrollments-{total}-user": str(world.student_c.pk),
                 f"enrollments-{total}-role": "student", f"enrollments-{total}-is_active": "on"})
    response = as_staff_a.post(url("course", "change", world.course_a.pk), data)
    assert response.status_code == 200
    assert not Enrollment.objects.filter(user=world.student_c, course=world.course_a).exists()
    assert world.student_c not in rows(as_staff_a.get(url("user", "changelist")))


def test_inline_enrollment_of_own_school_user_works(as_staff_a, world):
    new_student = factories.user("new_student", age=14)
    services.membership_grant(user=new_student, institution=world.school_a, role=Role.STUDENT)
    data = changeform_data(as_staff_a.get(url("course", "change", world.course_a.pk)))
    total = int(data["enrollments-TOTAL_FORMS"])
    data.update({"enrollments-TOTAL_FORMS": str(total + 1), f"enrollments-{total}-user": str(new_student.pk),
                 f"enrollments-{total}-role": "student", f"enrollments-{total}-is_active": "on"})
    response = as_staff_a.post(url("course", "change", world.course_a.pk), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    enrollment = Enrollment.objects.get(user=new_student)
    assert (enrollment.course, enrollment.institution_id) == (world.course_a, world.school_a.pk)
    assert LogEntry.objects.get_for_object(enrollment).get().actor == world.staff_a


def test_user_membership_inline_offers_only_own_school(as_staff_a, world):
    response = as_staff_a.get(url("user", "change", world.student_a.pk))
    assert response.status_code == 200
    inline = next(i for i in response.context["inline_admin_formsets"] if i.formset.model is Membership)
    assert {m.institution_id for m in inline.formset.queryset} == {world.school_a.pk}
    assert list(inline.formset.form.base_fields["institution"].queryset) == [world.school_a]


# --- actions --------------------------------------------------------------------------------------------


def action_names(response) -> set[str]:
    return {name for name, _ in response.context["action_form"].fields["action"].choices if name}


def test_drop_selected_goes_through_services_and_is_audited(as_staff_a, world):
    mine = Enrollment.objects.get(course=world.course_a, user=world.student_a)
    theirs = Enrollment.objects.get(course=world.course_b, user=world.student_b)
    before = LogEntry.objects.order_by("pk").last().pk  # the audit trail is append-only: look only at new rows
    response = as_staff_a.post(url("enrollment", "changelist"), {
        "action": "drop_selected", "_selected_action": [mine.pk, theirs.pk], "index": "0"}, follow=True)
    assert response.status_code == 200
    assert "Dropped 1 enrollments." in response.content.decode()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.is_active is False
    assert theirs.is_active is True  # a forged id from another school is ignored
    entry = LogEntry.objects.get_for_object(mine).filter(pk__gt=before).exclude(action=LogEntry.Action.ACCESS).get()
    assert entry.actor == world.staff_a
    assert entry.action == LogEntry.Action.UPDATE
    assert entry.changes_dict["is_active"] == ["True", "False"]
    assert not LogEntry.objects.get_for_object(theirs).filter(pk__gt=before).exists()


def test_bulk_delete_is_not_offered_on_enrollments(as_superuser, world):
    client = as_superuser
    response = client.get(url("enrollment", "changelist"))
    assert "drop_selected" in action_names(response)
    assert "delete_selected" not in action_names(response)
    assert "delete_selected" in action_names(client.get(url("course", "changelist")))  # offered elsewhere

    enrollment = Enrollment.objects.get(course=world.course_a, user=world.student_a)
    client.post(url("enrollment", "changelist"),
                {"action": "delete_selected", "_selected_action": [enrollment.pk], "post": "yes", "index": "0"})
    assert Enrollment.objects.filter(pk=enrollment.pk).exists()


def test_staff_has_no_delete_on_enrollments_either(as_staff_a, world):
    assert "delete_selected" not in action_names(as_staff_a.get(url("enrollment", "changelist")))


# --- modules school staff do not administer ---------------------------------------------------------------


PLATFORM_MODULES = ["compliance_districtapiclient", "classrooms_districtrole", "auditlog_logentry", "auth_group",
                    "oauth2_provider_application", "oauth2_provider_accesstoken", "oauth2_provider_refreshtoken"]


@pytest.mark.parametrize("who", ["staff_a", "district_admin"])
def test_platform_modules_are_superuser_only(client, world, district_admin, who):
    """API credentials, tokens, the cross-tenant audit log and permission groups are not school business."""
    client.force_login(district_admin if who == "district_admin" else world.staff_a)
    index = client.get(reverse("admin:index")).content.decode()
    for module in PLATFORM_MODULES:
        assert reverse(f"admin:{module}_changelist") not in index
        assert client.get(reverse(f"admin:{module}_changelist")).status_code == 403, module


def test_staff_without_any_school_sees_nothing(client, world):
    """An is_staff account whose staff membership ended keeps the admin login but sees no rows."""
    loner = factories.staff_of(world.school_a, "former_staff")
    Membership.objects.filter(user=loner).update(is_active=False)
    client.force_login(loner)
    for model in ("course", "enrollment", "livesession", "membership", "user"):
        assert rows(client.get(url(model, "changelist"))) == []


def test_staff_group_has_no_delete_or_superuser_permissions():
    group = staff_group()
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert not any(c.startswith("delete_") for c in codenames)
    ct = ContentType.objects.get_for_model(User)
    assert not Permission.objects.filter(content_type=ct, codename="delete_user", group=group).exists()
