"""Reads for the district API: which client is calling, which institutions and people it may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from classrooms.models import Course, Enrollment, Guardianship, Institution, Membership, Role, User
from classrooms.selectors import scoped_to, staff_institution_ids
from compliance.models import DistrictAPIClient, RosterLink, RosterStatus


def api_client_for_token(token) -> DistrictAPIClient | None:
    app_id = getattr(token, "application_id", None)
    if app_id is None:
        return None
    return (DistrictAPIClient.objects.select_related("district")
            .filter(application_id=app_id, is_active=True).first())


def institution_ids_for_request(request) -> frozenset[int] | None:
    """The API's tenant scope: a district client sees its district's schools; a signed-in person sees the
    schools they administer (not schools where they are only a parent or teacher)."""
    cached = getattr(request, "_aula_api_scope", "unset")
    if cached != "unset":
        return cached
    token = getattr(request, "auth", None)
    if token is not None and hasattr(token, "application_id"):
        client = api_client_for_token(token)
        ids = frozenset() if client is None else frozenset(
            Institution.objects.filter(district_id=client.district_id).values_list("id", flat=True))
    else:
        ids = staff_institution_ids(request.user)
    request._aula_api_scope = ids
    return ids


def api_scoped(queryset: QuerySet, request) -> QuerySet:
    return scoped_to(queryset, institution_ids_for_request(request))


def api_district_id(request) -> int | None:
    """The district a district client acts for (None for signed-in people)."""
    token = getattr(request, "auth", None)
    if token is None or not hasattr(token, "application_id"):
        return None
    client = api_client_for_token(token)
    return None if client is None else client.district_id


def district_institution_ids(district_id: int) -> frozenset[int]:
    return frozenset(Institution.objects.filter(district_id=district_id).values_list("id", flat=True))


def people_scoped_to(ids: frozenset[int] | None) -> QuerySet[User]:
    """People with a membership, enrollment or guardianship (either side) at these schools."""
    if ids is None:
        return User.objects.all()
    return User.objects.filter(
        Q(pk__in=scoped_to(Membership.objects.all(), ids).values("user_id"))
        | Q(pk__in=scoped_to(Enrollment.objects.all(), ids).values("user_id"))
        | Q(pk__in=scoped_to(Guardianship.objects.all(), ids).values("guardian_id"))
        | Q(pk__in=scoped_to(Guardianship.objects.all(), ids).values("student_id"))
    )


def students_scoped_to(ids: frozenset[int] | None) -> QuerySet[User]:
    """Students of these schools (by membership or enrollment): whose records FERPA protects."""
    return User.objects.filter(
        Q(pk__in=scoped_to(Membership.objects.filter(role=Role.STUDENT), ids).values("user_id"))
        | Q(pk__in=scoped_to(Enrollment.objects.filter(role=Role.STUDENT), ids).values("user_id"))
    )


def api_people(request) -> QuerySet[User]:
    return people_scoped_to(institution_ids_for_request(request))


def user_by_sourced_id(district_id: int, sourced_id: str):
    """The person this district's SIS sent with this sourcedId (OneRoster), or None."""
    pk = RosterLink.objects.filter(district_id=district_id, kind=RosterLink.Kind.USER, sourced_id=sourced_id) \
        .values_list("object_id", flat=True).first()
    return User.objects.filter(pk=pk).first() if pk else None


def _current_user_links(district_id: int):
    """This district's person links its SIS still lists (not marked `tobedeleted`)."""
    return RosterLink.objects.filter(district_id=district_id, kind=RosterLink.Kind.USER).exclude(
        data__contains={"status": RosterStatus.TO_BE_DELETED})


def rostered_user_by_sourced_id(district_id: int, sourced_id: str):
    """The person this district's SIS lists with this sourcedId, or None (also when the SIS deleted them)."""
    pk = _current_user_links(district_id).filter(sourced_id=sourced_id).values_list("object_id", flat=True).first()
    return User.objects.filter(pk=pk).first() if pk else None


def user_sourced_id_in_other_districts(district_id: int, sourced_id: str) -> bool:
    """Whether another district's SIS sent a person with this sourcedId."""
    return RosterLink.objects.filter(kind=RosterLink.Kind.USER, sourced_id=sourced_id).exclude(
        district_id=district_id).exists()


def is_rostered_by(district_id: int, user_id: int) -> bool:
    """Whether this district's SIS lists the person (a user record not marked `tobedeleted`)."""
    return _current_user_links(district_id).filter(object_id=user_id).exists()


def course_by_sourced_id(district_id: int, sourced_id: str):
    """The class this district's SIS sent with this sourcedId (OneRoster), or None."""
    pk = RosterLink.objects.filter(district_id=district_id, kind=RosterLink.Kind.CLASS, sourced_id=sourced_id) \
        .values_list("object_id", flat=True).first()
    return Course.objects.filter(pk=pk, institution__district_id=district_id).first() if pk else None


def course_is_sis_rostered(course_id: int) -> bool:
    return RosterLink.objects.filter(kind=RosterLink.Kind.CLASS, object_id=course_id).exists()
