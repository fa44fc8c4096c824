"""OneRoster 1.2 rostering resources for district clients: orgs, academic sessions, courses, classes, users and
enrollments. List (limit/offset paging, `filter=dateLastModified>'…'`, `sort`/`orderBy`), retrieve by sourcedId,
and idempotent upsert by sourcedId (PUT, scope roster.write). docs/api.md describes the mapping to Aula's rows.
"""

from __future__ import annotations

import datetime as dt
import re

from django.db.models import DateTimeField, F, OuterRef, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.http import Http404
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from classrooms.models import Course, District, Enrollment, Guardianship, Institution, Membership, Role, User
from compliance import roster_records, selectors
from compliance.api.base import DistrictAPIView, DistrictDetailView, DistrictListView
from compliance.models import AcademicSession, CatalogCourse, RosterLink, RosterStatus
from compliance.rostering import Roster, aula_sourced_id

BASE = "/api/v1/ims/oneroster/rostering/v1p2"
Kind = RosterLink.Kind

# --- paging, filter and sort --------------------------------------------------------------------------------


class OneRosterPagination(LimitOffsetPagination):
    """OneRoster paging: `limit` (default 100, at most 1000) and `offset`; the total in `X-Total-Count`,
    neighbour pages in the `Link` header, and the records under the collection's name."""

    default_limit = 100
    max_limit = 1000

    def get_paginated_response(self, data):
        collection = self.collection
        links = [f'<{url}>; rel="{rel}"' for rel, url in (("next", self.get_next_link()),
                                                          ("prev", self.get_previous_link())) if url]
        headers = {"X-Total-Count": str(self.count)}
        if links:
            headers["Link"] = ", ".join(links)
        return Response({collection: data}, headers=headers)

    def paginate_queryset(self, queryset, request, view=None):
        self.collection = view.collection
        return super().paginate_queryset(queryset, request, view)

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= self.max_limit):
            raise ValidationError({"limit": f"An integer from 1 to {self.max_limit}."})
        return super().get_limit(request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"] = ({"type": "integer", "minimum": 1, "maximum": self.max_limit}
                                   if parameter["name"] == self.limit_query_param
                                   else {"type": "integer", "minimum": 0, "maximum": 10**9})
        return parameters

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw is not None and not (raw.isdigit() and int(raw) <= 10**9):
            raise ValidationError({"offset": "A non-negative integer."})
        return super().get_offset(request)


# Calendar dates of the years 1000-2999 (Feb 29 aside: the server takes it in leap years, the pattern leaves it
# out), times with a UTC offset of at most 14 hours.
_DATE = (r"[12][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
         r"|02-(0[1-9]|1[0-9]|2[0-8]))")
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?"
_ONE = rf"dateLastModified *(>=|<=|>|<|=) *'{_DATE}({_TIME})?'"
# The schema documents exactly this pattern, and the server checks it before parsing.
FILTER_PATTERN = rf"^ *{_ONE}( +AND +{_ONE})* *$"
_PREDICATE = re.compile(r"dateLastModified *(>=|<=|>|<|=) *'([^']*)'")
_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "=": "exact"}


def parse_filter(raw: str | None) -> list[tuple[str, dt.datetime]]:
    """OneRoster `filter` predicates on dateLastModified, joined by AND: [(lookup, time)]."""
    if raw is None:
        return []
    if not re.match(FILTER_PATTERN, raw):
        raise ValidationError({"filter": ["Only dateLastModified, as in dateLastModified>'2026-01-01T00:00:00Z' "
                                          "(predicates joined by ' AND ')."]})
    predicates = []
    for op, value in _PREDICATE.findall(raw):
        try:
            when = parse_datetime(value) if "T" in value else None
            if when is None:
                when = dt.datetime.combine(parse_date(value), dt.time(), tzinfo=dt.UTC)
        except (TypeError, ValueError):
            raise ValidationError({"filter": [f"{value} is not a date or time."]}) from None
        when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
        predicates.append((_OPS[op], when))
    return predicates


COMMON_PARAMETERS = [
    OpenApiParameter("filter", {"type": "string", "pattern": FILTER_PATTERN},
                     description="OneRoster filter on dateLastModified, e.g. "
                     "`dateLastModified>'2026-01-01T00:00:00Z'` (predicates joined by ` AND `)."),
    OpenApiParameter("sort", str, enum=["sourcedId", "dateLastModified"], description="Sort field."),
    OpenApiParameter("orderBy", str, enum=["asc", "desc"], description="Sort direction (default asc)."),
]


def ordering(request) -> list[str]:
    sort = request.query_params.get("sort", "sourcedId")
    direction = request.query_params.get("orderBy", "asc")
    if sort not in {"sourcedId", "dateLastModified"}:
        raise ValidationError({"sort": "Sort by sourcedId or dateLastModified."})
    if direction not in {"asc", "desc"}:
        raise ValidationError({"orderBy": "asc or desc."})
    sign = "-" if direction == "desc" else ""
    # Aula ids stand in for sourcedId order: stable, and never reveal another district's ids.
    return [f"{sign}modified", f"{sign}id"] if sort == "dateLastModified" else [f"{sign}id"]


# --- sourcedIds of a page, loaded at once ----------------------------------------------------------------------


class SourcedIds:
    """The district's sourcedIds (and extra OneRoster data) of the rows on one page, in one query per kind."""

    def __init__(self, district_id: int):
        self.district_id = district_id
        self.links: dict[tuple[str, int], RosterLink] = {}

    def load(self, kind: str, pks) -> None:
        missing = {pk for pk in pks if pk is not None and (kind, pk) not in self.links}
        if missing:
            for link in RosterLink.objects.filter(district_id=self.district_id, kind=kind, object_id__in=missing):
                self.links[(kind, link.object_id)] = link

    def get(self, kind: str, pk: int) -> str:
        link = self.links.get((kind, pk))
        return link.sourced_id if link else aula_sourced_id(kind, pk)

    def data(self, kind: str, pk: int) -> dict:
        link = self.links.get((kind, pk))
        return link.data if link else {}

    def ref(self, kind: str, pk: int | None, collection: str, type_: str) -> dict | None:
        if pk is None:
            return None
        return ref(self.get(kind, pk), collection, type_)


def ref(sourced_id: str, collection: str, type_: str) -> dict:
    return {"href": f"{BASE}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": type_}


def _modified(queryset, kind: str, district_id: int):
    """Annotate `modified`: the later of the row's own change and its roster link's (OneRoster-only fields)."""
    link_changed = RosterLink.objects.filter(district_id=district_id, kind=kind, object_id=OuterRef("pk"))
    return queryset.annotate(modified=Greatest(
        F("updated_at"),
        Coalesce(Subquery(link_changed.values("updated_at")[:1]), F("updated_at")),
        output_field=DateTimeField()))


# --- output shapes (the OpenAPI schema and the renderer share them) -------------------------------------------


class OneRosterRef(serializers.Serializer):
    href = serializers.CharField()
    sourcedId = serializers.CharField()
    type = serializers.CharField()


class OneRosterBase(serializers.Serializer):
    sourcedId = serializers.CharField()
    status = serializers.ChoiceField(choices=roster_records.STATUSES)
    dateLastModified = serializers.DateTimeField()


class OneRosterOrg(OneRosterBase):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=roster_records.ORG_TYPES)
    identifier = serializers.CharField(allow_blank=True)
    parent = OneRosterRef(allow_null=True)
    children = OneRosterRef(many=True)


class OneRosterAcademicSession(OneRosterBase):
    title = serializers.CharField()
    type = serializers.ChoiceField(choices=roster_records.SESSION_TYPES)
    startDate = serializers.DateField()
    endDate = serializers.DateField()
    parent = OneRosterRef(allow_null=True)
    schoolYear = serializers.CharField()


class OneRosterCourse(OneRosterBase):
    title = serializers.CharField()
    courseCode = serializers.CharField(allow_blank=True)
    schoolYear = OneRosterRef(allow_null=True)
    org = OneRosterRef()
    grades = serializers.ListField(child=serializers.CharField())
    subjects = serializers.ListField(child=serializers.CharField())


class OneRosterClass(OneRosterBase):
    title = serializers.CharField()
    classCode = serializers.CharField()
    classType = serializers.ChoiceField(choices=["homeroom", "scheduled"])
    location = serializers.CharField(allow_blank=True)
    course = OneRosterRef(allow_null=True)
    school = OneRosterRef()
    terms = OneRosterRef(many=True)
    grades = serializers.ListField(child=serializers.CharField())
    subjects = serializers.ListField(child=serializers.CharField())


class OneRosterRole(serializers.Serializer):
    roleType = serializers.ChoiceField(choices=["primary", "secondary"])
    role = serializers.CharField()
    org = OneRosterRef()


class OneRosterUser(OneRosterBase):
    enabledUser = serializers.BooleanField()
    username = serializers.CharField()
    givenName = serializers.CharField(allow_blank=True)
    familyName = serializers.CharField(allow_blank=True)
    middleName = serializers.CharField(allow_blank=True)
    email = serializers.CharField()
    identifier = serializers.CharField(allow_blank=True)
    roles = OneRosterRole(many=True)
    agents = OneRosterRef(many=True)
    grades = serializers.ListField(child=serializers.CharField())


class OneRosterEnrollment(OneRosterBase):
    user = OneRosterRef()
    school = OneRosterRef()
    role = serializers.ChoiceField(choices=roster_records.ENROLLMENT_ROLES)
    primary = serializers.BooleanField()
    beginDate = serializers.DateField(allow_null=True)
    endDate = serializers.DateField(allow_null=True)


OneRosterEnrollment._declared_fields["class"] = OneRosterRef()


# --- the resources -----------------------------------------------------------------------------------------------


class OneRosterView(DistrictAPIView):
    """Common to every OneRoster view: district clients only, sourcedIds of the caller's district."""

    clients_only = True
    pagination_class = OneRosterPagination
    kind: str = ""
    collection: str = ""
    singular: str = ""
    type_name: str = ""
    output: type[serializers.Serializer] = OneRosterBase

    @property
    def district_id(self) -> int:
        return selectors.api_district_id(self.request)

    def rows(self):
        """The caller's rows of this resource, annotated with `modified` (dateLastModified)."""
        raise NotImplementedError

    def get_queryset(self):
        return self.rows()

    def filter_queryset(self, queryset):
        for lookup, when in parse_filter(self.request.query_params.get("filter")):
            queryset = queryset.filter(**{f"modified__{lookup}": when})
        return queryset.order_by(*ordering(self.request))

    def get_object(self):
        roster = Roster(District(pk=self.district_id))
        pk = roster.object_id(self.kind, self.kwargs["sourced_id"])
        record = None if pk is None else self.rows().filter(pk=pk).first()
        if record is None:
            raise Http404
        return record

    def render(self, records: list) -> list[dict]:
        ids = SourcedIds(self.district_id)
        return [self.output(r).data for r in self.shape(records, ids)]

    def shape(self, records: list, ids: SourcedIds) -> list[dict]:
        raise NotImplementedError

    def wrap(self, data: dict) -> dict:
        return {self.singular: data}


def _status(active: bool) -> str:
    return RosterStatus.ACTIVE if active else RosterStatus.TO_BE_DELETED


class OrgRows(OneRosterView):
    kind, collection, singular, output = Kind.ORG, "orgs", "org", OneRosterOrg

    def rows(self):
        return _modified(self.scoped(Institution.objects.all()), Kind.ORG, self.district_id)

    def district_row(self):
        district = District.objects.get(pk=self.district_id)
        return _modified(self.scoped(District.objects.filter(pk=district.pk)), Kind.DISTRICT, self.district_id).get()

    def get_queryset(self):
        # The district org first, then its schools: a short list, filtered and sorted like any other.
        district, schools = self.district_row(), super().filter_queryset(self.rows())
        predicates = parse_filter(self.request.query_params.get("filter"))
        keep = all(_compare(district.modified, lookup, when) for lookup, when in predicates)
        return ([district] if keep else []) + list(schools)

    def filter_queryset(self, queryset):
        return queryset

    def get_object(self):
        sourced_id = self.kwargs["sourced_id"]
        district = self.district_row()
        roster = Roster(district)
        if roster.find(Kind.DISTRICT, sourced_id) is not None:
            return district
        return super().get_object()

    def shape(self, records, ids):
        children = [] if not any(isinstance(r, District) for r in records) else list(
            self.scoped(Institution.objects.filter(district_id=self.district_id)).order_by("id")
            .values_list("id", flat=True))
        ids.load(Kind.ORG, [r.pk for r in records if isinstance(r, Institution)] + children)
        ids.load(Kind.DISTRICT, [self.district_id])
        district_ref = ids.ref(Kind.DISTRICT, self.district_id, "orgs", "org")
        out = []
        for r in records:
            if isinstance(r, District):
                out.append({"sourcedId": ids.get(Kind.DISTRICT, r.pk), "status": "active",
                            "dateLastModified": r.modified, "name": r.name, "type": "district",
                            "identifier": r.slug, "parent": None,
                            "children": [ids.ref(Kind.ORG, pk, "orgs", "org") for pk in children]})
            else:
                out.append({"sourcedId": ids.get(Kind.ORG, r.pk), "status": "active", "dateLastModified": r.modified,
                            "name": r.name, "type": "school",
                            "identifier": ids.data(Kind.ORG, r.pk).get("identifier") or r.slug,
                            "parent": district_ref, "children": []})
        return out


def _compare(value, lookup: str, when) -> bool:
    return {"gt": value > when, "gte": value >= when, "lt": value < when, "lte": value <= when,
            "exact": value == when}[lookup]


class AcademicSessionRows(OneRosterView):
    kind, collection, singular = "academicSession", "academicSessions", "academicSession"
    output = OneRosterAcademicSession

    def rows(self):
        return self.scoped(AcademicSession.objects.select_related("parent")).annotate(modified=F("updated_at"))

    def get_object(self):
        record = self.rows().filter(sourced_id=self.kwargs["sourced_id"]).first()
        if record is None:
            raise Http404
        return record

    def shape(self, records, ids):
        return [{"sourcedId": r.sourced_id, "status": r.status, "dateLastModified": r.modified, "title": r.title,
                 "type": r.kind, "startDate": r.start_date, "endDate": r.end_date,
                 "parent": ref(r.parent.sourced_id, "academicSessions", "academicSession") if r.parent else None,
                 "schoolYear": str(r.school_year)} for r in records]


class CourseRows(OneRosterView):
    kind, collection, singular, output = "course", "courses", "course", OneRosterCourse

    def rows(self):
        return self.scoped(CatalogCourse.objects.select_related("school_year")).annotate(modified=F("updated_at"))

    def get_object(self):
        record = self.rows().filter(sourced_id=self.kwargs["sourced_id"]).first()
        if record is None:
            raise Http404
        return record

    def shape(self, records, ids):
        ids.load(Kind.ORG, [r.org_id for r in records])
        ids.load(Kind.DISTRICT, [self.district_id])
        return [{"sourcedId": r.sourced_id, "status": r.status, "dateLastModified": r.modified, "title": r.title,
                 "courseCode": r.course_code, "grades": r.grades, "subjects": r.subjects,
                 "schoolYear": ref(r.school_year.sourced_id, "academicSessions", "academicSession")
                 if r.school_year else None,
                 "org": ids.ref(Kind.ORG, r.org_id, "orgs", "org") if r.org_id
                 else ids.ref(Kind.DISTRICT, self.district_id, "orgs", "org")} for r in records]


class ClassRows(OneRosterView):
    kind, collection, singular, output = Kind.CLASS, "classes", "class", OneRosterClass

    def rows(self):
        return _modified(self.scoped(Course.objects.all()), Kind.CLASS, self.district_id)

    def shape(self, records, ids):
        ids.load(Kind.CLASS, [r.pk for r in records])
        ids.load(Kind.ORG, [r.institution_id for r in records])
        out = []
        for r in records:
            data = ids.data(Kind.CLASS, r.pk)
            out.append({
                "sourcedId": ids.get(Kind.CLASS, r.pk), "status": _status(r.is_active), "dateLastModified": r.modified,
                "title": r.title, "classCode": r.code, "classType": data.get("classType", "scheduled"),
                "location": data.get("location", ""),
                "course": ref(data["course"], "courses", "course") if data.get("course") else None,
                "school": ids.ref(Kind.ORG, r.institution_id, "orgs", "org"),
                "terms": [ref(t, "academicSessions", "academicSession") for t in data.get("terms", [])],
                "grades": data.get("grades", []), "subjects": data.get("subjects", []),
            })
        return out


_ROLE_NAMES = {Role.STUDENT: "student", Role.TEACHER: "teacher", Role.TA: "aide", Role.STAFF: "administrator"}
_ENROLLMENT_ROLES = {Role.STUDENT: "student", Role.TEACHER: "teacher", Role.TA: "aide"}


class UserRows(OneRosterView):
    kind, collection, singular, output = Kind.USER, "users", "user", OneRosterUser

    def rows(self):
        ids = selectors.institution_ids_for_request(self.request)
        linked = RosterLink.objects.filter(district_id=self.district_id, kind=Kind.USER).values("object_id")
        people = User.objects.filter(pk__in=selectors.people_scoped_to(ids).values("pk").union(linked))
        return _modified(people, Kind.USER, self.district_id)

    def shape(self, records, ids):
        pks = [r.pk for r in records]
        memberships = list(self.scoped(Membership.objects.filter(user_id__in=pks, is_active=True)).order_by("id"))
        guardianships = list(self.scoped(Guardianship.objects.filter(guardian_id__in=pks) |
                                         Guardianship.objects.filter(student_id__in=pks)).order_by("id"))
        ids.load(Kind.USER, pks + [g.student_id for g in guardianships] + [g.guardian_id for g in guardianships])
        ids.load(Kind.ORG, [m.institution_id for m in memberships] + [g.institution_id for g in guardianships])
        out = []
        for r in records:
            data = ids.data(Kind.USER, r.pk)
            roles = [(_ROLE_NAMES[m.role], m.institution_id) for m in memberships if m.user_id == r.pk]
            roles += [(g.relationship if g.relationship in {"parent", "guardian", "relative"} else "guardian",
                       g.institution_id) for g in guardianships if g.guardian_id == r.pk]
            agents = [g.student_id for g in guardianships if g.guardian_id == r.pk]
            agents += [g.guardian_id for g in guardianships if g.student_id == r.pk]
            # Without an active role at the district's schools (or marked so by the SIS) a person is to be deleted.
            active = r.is_active and bool(roles) and data.get("status", "active") == "active"
            out.append({
                "sourcedId": ids.get(Kind.USER, r.pk), "status": _status(active),
                "dateLastModified": r.modified, "enabledUser": r.is_active and data.get("enabledUser", True),
                "username": r.username, "givenName": r.first_name, "familyName": r.last_name,
                "middleName": data.get("middleName", ""), "email": r.email, "identifier": data.get("identifier", ""),
                "roles": [{"roleType": "primary" if n == 0 else "secondary", "role": role,
                           "org": ids.ref(Kind.ORG, org, "orgs", "org")} for n, (role, org) in enumerate(roles)],
                "agents": [ids.ref(Kind.USER, pk, "users", "user") for pk in dict.fromkeys(agents)],
                "grades": data.get("grades", []),
            })
        return out


class EnrollmentRows(OneRosterView):
    kind, collection, singular, output = Kind.ENROLLMENT, "enrollments", "enrollment", OneRosterEnrollment

    def rows(self):
        return _modified(self.scoped(Enrollment.objects.all()), Kind.ENROLLMENT, self.district_id)

    def shape(self, records, ids):
        ids.load(Kind.ENROLLMENT, [r.pk for r in records])
        ids.load(Kind.CLASS, [r.course_id for r in records])
        ids.load(Kind.USER, [r.user_id for r in records])
        ids.load(Kind.ORG, [r.institution_id for r in records])
        out = []
        for r in records:
            data = ids.data(Kind.ENROLLMENT, r.pk)
            out.append({
                "sourcedId": ids.get(Kind.ENROLLMENT, r.pk), "status": _status(r.is_active),
                "dateLastModified": r.modified, "class": ids.ref(Kind.CLASS, r.course_id, "classes", "class"),
                "user": ids.ref(Kind.USER, r.user_id, "users", "user"),
                "school": ids.ref(Kind.ORG, r.institution_id, "orgs", "org"), "role": _ENROLLMENT_ROLES[r.role],
                "primary": data.get("primary", r.role == Role.TEACHER), "beginDate": data.get("beginDate"),
                "endDate": data.get("endDate"),
            })
        return out


# --- list, retrieve and upsert views ------------------------------------------------------------------------------


def _list_view(rows_class, tag: str = "oneroster"):
    collection = rows_class.collection

    @extend_schema(tags=[tag], parameters=COMMON_PARAMETERS, responses={200: rows_class.output(many=True)},
                   summary=f"List {collection}")
    class ListView(rows_class, DistrictListView):
        pass

    ListView.__name__ = ListView.__qualname__ = f"{rows_class.__name__[:-4]}List"
    ListView.__doc__ = f"The district's {collection}, OneRoster 1.2 records (paged by limit and offset)."
    ListView.pagination_class = type(f"{rows_class.__name__[:-4]}Pagination", (OneRosterPagination,), {
        "get_paginated_response_schema": lambda self, schema: {
            "type": "object", "required": [collection], "properties": {collection: schema}}})
    return ListView


def _detail_view(rows_class, record_in, tag: str = "oneroster"):
    singular, output = rows_class.singular, rows_class.output
    wrapped_out = inline_serializer(name=f"OneRoster{singular[0].upper()}{singular[1:]}Single",
                                    fields={singular: output()})
    wrapped_in = inline_serializer(name=f"OneRoster{singular[0].upper()}{singular[1:]}Upsert",
                                   fields={singular: record_in()})

    class DetailView(rows_class, DistrictDetailView):
        lookup_field = lookup_url_kwarg = "sourced_id"
        parser_classes = [JSONParser]
        method_scopes = {"PUT": ["roster.write"]}

        @extend_schema(tags=[tag], responses={200: wrapped_out}, summary=f"Get one {singular} by sourcedId")
        def get(self, request, *args, **kwargs):
            return super().get(request, *args, **kwargs)

        @extend_schema(tags=[tag], request=wrapped_in, summary=f"Create or update one {singular} by sourcedId",
                       description="Idempotent: the same body again changes nothing. Needs `roster.write`.",
                       responses={200: wrapped_out, 201: wrapped_out,
                                  400: OpenApiResponse(description="Invalid record or unknown reference")})
        def put(self, request, *args, **kwargs):
            body = request.data.get(singular) if isinstance(request.data, dict) else None
            if not isinstance(body, dict):
                raise ValidationError({singular: f"The body is {{\"{singular}\": {{...}}}}."})
            record = roster_records.validate_record(singular, body)
            roster = Roster(District.objects.get(pk=self.district_id))
            _, created = roster.upsert(singular, self.kwargs["sourced_id"], record)
            result = self.get_object()
            return Response(self.wrap(self.render([result])[0]), status=201 if created else 200)

    DetailView.__name__ = DetailView.__qualname__ = f"{rows_class.__name__[:-4]}Detail"
    DetailView.__doc__ = f"One {singular} of the district by its sourcedId."
    return DetailView


OrgList = _list_view(OrgRows)
OrgDetail = _detail_view(OrgRows, roster_records.OrgIn)
AcademicSessionList = _list_view(AcademicSessionRows)
AcademicSessionDetail = _detail_view(AcademicSessionRows, roster_records.AcademicSessionIn)
CourseList = _list_view(CourseRows)
CourseDetail = _detail_view(CourseRows, roster_records.CourseIn)
ClassList = _list_view(ClassRows)
ClassDetail = _detail_view(ClassRows, roster_records.ClassIn)
UserList = _list_view(UserRows)
UserDetail = _detail_view(UserRows, roster_records.UserIn)
EnrollmentList = _list_view(EnrollmentRows)
EnrollmentDetail = _detail_view(EnrollmentRows, roster_records.EnrollmentIn)

RESOURCES = [
    ("orgs", OrgList, OrgDetail),
    ("academicSessions", AcademicSessionList, AcademicSessionDetail),
    ("courses", CourseList, CourseDetail),
    ("classes", ClassList, ClassDetail),
    ("users", UserList, UserDetail),
    ("enrollments", EnrollmentList, EnrollmentDetail),
]
