"""Rostering from a district's SIS: idempotent upserts by OneRoster sourcedId (the REST PUT and the CSV bulk
import both call these), sourcedId resolution within one district, and the all-or-nothing CSV import.

Every lookup is confined to the district that sends the data: a sourcedId, an email or a school of another
district is "unknown" here, never found and never changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.text import slugify
from rest_framework import serializers

from classrooms import services as classroom_services
from classrooms.models import Course, District, Enrollment, Institution, Membership, Role, User
from classrooms.selectors import scoped_to
from compliance.models import AcademicSession, CatalogCourse, RosterCsvImport, RosterLink, RosterStatus
from compliance.roster_records import validate_record
from compliance.selectors import district_institution_ids, people_scoped_to

Kind = RosterLink.Kind
AULA_PREFIX = "aula-"


def aula_sourced_id(kind: str, pk: int) -> str:
    """The sourcedId of an Aula row that no SIS has sent (created in Aula): stable, and reserved."""
    return f"{AULA_PREFIX}{kind}-{pk}"


def _aula_pk(kind: str, sourced_id: str) -> int | None:
    prefix = f"{AULA_PREFIX}{kind}-"
    if sourced_id.startswith(prefix) and sourced_id[len(prefix):].isdigit():
        return int(sourced_id[len(prefix):])
    return None


def _unknown(field_name: str, sourced_id: str) -> ValidationError:
    return ValidationError({field_name: f"No {field_name} with sourcedId {sourced_id!r} in this district."})


class Roster:
    """One district's rostering context: its schools, and its sourcedId ↔ row links."""

    def __init__(self, district: District):
        self.district = district
        self.ids = district_institution_ids(district.pk)
        # Per-instance caches (a Roster lives for one request, import or sync run): links by sourcedId (None:
        # known to be absent), schools/classes/people by pk, and reverse links. Emptied when an upsert fails,
        # since its savepoint's rows are gone.
        self._links: dict[tuple[str, str], RosterLink | None] = {}
        self._rows: dict[tuple[str, int], object] = {}
        self._sids: dict[tuple[str, int], str] = {}

    def forget(self) -> None:
        self._links.clear()
        self._rows.clear()
        self._sids.clear()

    def prefetch(self, kind: str, sourced_ids) -> None:
        """Load the links of many sourcedIds in one query (a sync applies a page of records at a time)."""
        wanted = {s for s in sourced_ids if isinstance(s, str) and (kind, s) not in self._links}
        if not wanted:
            return
        for link in RosterLink.objects.filter(district=self.district, kind=kind, sourced_id__in=wanted):
            self._links[(kind, link.sourced_id)] = link
        for s in wanted:
            self._links.setdefault((kind, s), None)

    def _link_for(self, kind: str, sourced_id: str) -> RosterLink | None:
        key = (kind, sourced_id)
        if key not in self._links:
            self._links[key] = RosterLink.objects.filter(district=self.district, kind=kind,
                                                         sourced_id=sourced_id).first()
        return self._links[key]

    # --- resolution ---------------------------------------------------------------------------------------

    def _candidates(self, kind: str):
        if kind == Kind.ORG:
            return scoped_to(Institution.objects.all(), self.ids)
        if kind == Kind.CLASS:
            return scoped_to(Course.objects.all(), self.ids)
        if kind == Kind.ENROLLMENT:
            return scoped_to(Enrollment.objects.all(), self.ids)
        if kind == Kind.USER:
            return people_scoped_to(self.ids)
        raise ValueError(kind)

    def object_id(self, kind: str, sourced_id: str) -> int | None:
        link = self._link_for(kind, sourced_id)
        if link is not None:
            return link.object_id
        return _aula_pk(kind, sourced_id)

    def find(self, kind: str, sourced_id: str):
        """The district's row with this sourcedId, or None (another district's row is None too)."""
        if kind == Kind.DISTRICT:
            return self.district if sourced_id == self.sourced_id(Kind.DISTRICT, self.district.pk) else None
        pk = self.object_id(kind, sourced_id)
        if pk is None:
            return None
        if (kind, pk) in self._rows:
            return self._rows[(kind, pk)]
        if kind == Kind.USER:
            # A person rostered by this district may have no membership here yet (a guardian, a new hire).
            linked = self._link_for(kind, sourced_id) is not None or RosterLink.objects.filter(
                district=self.district, kind=kind, object_id=pk).exists()
            row = (User.objects if linked else self._candidates(kind)).filter(pk=pk).first()
        else:
            row = self._candidates(kind).filter(pk=pk).first()
        if row is not None and kind != Kind.ENROLLMENT:
            self._rows[(kind, pk)] = row
        return row

    def sourced_id(self, kind: str, pk: int) -> str:
        if (kind, pk) not in self._sids:
            link = RosterLink.objects.filter(district=self.district, kind=kind, object_id=pk).first()
            self._sids[(kind, pk)] = link.sourced_id if link else aula_sourced_id(kind, pk)
        return self._sids[(kind, pk)]

    def school(self, sourced_id: str, field_name: str = "school") -> Institution:
        school = self.find(Kind.ORG, sourced_id)
        if school is None:
            raise _unknown(field_name, sourced_id)
        return school

    def academic_session(self, sourced_id: str, field_name: str) -> AcademicSession:
        session = AcademicSession.objects.filter(district=self.district, sourced_id=sourced_id).first()
        if session is None:
            raise _unknown(field_name, sourced_id)
        return session

    def link(self, kind: str, sourced_id: str, pk: int, data: dict | None = None) -> RosterLink:
        if sourced_id.startswith(AULA_PREFIX) and _aula_pk(kind, sourced_id) != pk:
            raise ValidationError({"sourcedId": f"sourcedIds starting with {AULA_PREFIX!r} are Aula's own."})
        link = self._link_for(kind, sourced_id)
        if link is None or link.object_id != pk:
            other = RosterLink.objects.filter(district=self.district, kind=kind, object_id=pk).first()
            if other is not None and other.sourced_id != sourced_id:
                raise ValidationError({"sourcedId": f"This {kind} already has the sourcedId {other.sourced_id!r}."})
        if link is None:
            link = RosterLink.objects.create(district=self.district, kind=kind, sourced_id=sourced_id, object_id=pk,
                                             data=data or {})
            self._links[(kind, sourced_id)] = link
        elif link.object_id != pk or (data is not None and link.data != data):
            link.object_id = pk
            if data is not None:
                link.data = data
            link.save()
        self._sids[(kind, pk)] = sourced_id
        return link

    # --- upserts (one per OneRoster resource); each returns (row, created) ----------------------------------

    def org_upsert(self, sourced_id: str, rec: dict):
        if rec["type"] == "district":
            own = RosterLink.objects.filter(district=self.district, kind=Kind.DISTRICT).first()
            if own is not None and own.sourced_id != sourced_id:
                raise ValidationError({"sourcedId": "This district already has another sourcedId."})
            self.link(Kind.DISTRICT, sourced_id, self.district.pk)
            classroom_services.district_upsert(slug=self.district.slug, name=rec["name"])
            self.district.refresh_from_db()
            return self.district, False
        if rec["status"] == RosterStatus.TO_BE_DELETED:
            raise ValidationError({"status": "Schools are not deleted through rostering; ask Aula support."})
        parent = rec.get("parent")
        if parent and parent["sourcedId"] != self.sourced_id(Kind.DISTRICT, self.district.pk):
            raise ValidationError({"parent": "A school's parent must be this district."})
        school = self.find(Kind.ORG, sourced_id)
        created = school is None
        if created:
            digest = hashlib.sha256(f"{self.district.pk}:{sourced_id}".encode()).hexdigest()[:10]
            slug = f"{slugify(rec['identifier'] or rec['name'])[:40] or 'school'}-{self.district.pk}-{digest}"
            if Institution.objects.filter(slug=slug).exclude(district=self.district).exists():
                raise ValidationError({"identifier": "This school cannot be created; ask Aula support."})
            school = classroom_services.institution_upsert(district=self.district, slug=slug, name=rec["name"])
            self.ids = self.ids | {school.pk}
        elif school.name != rec["name"]:
            school.name = rec["name"]
            classroom_services.institution_save(institution=school)
        self.link(Kind.ORG, sourced_id, school.pk, {"identifier": rec["identifier"]})
        return school, created

    def academic_session_upsert(self, sourced_id: str, rec: dict):
        parent = rec.get("parent")
        values = {
            "status": rec["status"], "title": rec["title"], "kind": rec["type"], "start_date": rec["startDate"],
            "end_date": rec["endDate"], "school_year": rec["schoolYear"],
            "parent": self.academic_session(parent["sourcedId"], "parent") if parent else None,
        }
        return _own_upsert(AcademicSession, self.district, sourced_id, values)

    def course_upsert(self, sourced_id: str, rec: dict):
        year, org = rec.get("schoolYear"), rec.get("org")
        values = {
            "status": rec["status"], "title": rec["title"], "course_code": rec["courseCode"],
            "grades": rec["grades"], "subjects": rec["subjects"],
            "school_year": self.academic_session(year["sourcedId"], "schoolYear") if year else None,
            "org": self.school(org["sourcedId"], "org") if org and org["sourcedId"] != self.sourced_id(
                Kind.DISTRICT, self.district.pk) else None,
        }
        return _own_upsert(CatalogCourse, self.district, sourced_id, values)

    def class_upsert(self, sourced_id: str, rec: dict):
        school = self.school(rec["school"]["sourcedId"])
        catalog = CatalogCourse.objects.filter(district=self.district, sourced_id=rec["course"]["sourcedId"]).first()
        if catalog is None:
            raise _unknown("course", rec["course"]["sourcedId"])
        terms = [self.academic_session(t["sourcedId"], "terms") for t in rec["terms"]]
        code = rec["classCode"] or sourced_id[:40]
        term = terms[0].title[:40] if terms else ""
        course = self.find(Kind.CLASS, sourced_id)
        created = course is None
        if created:
            course = classroom_services.course_upsert(institution=school, code=code, title=rec["title"], term=term)
            if RosterLink.objects.filter(district=self.district, kind=Kind.CLASS, object_id=course.pk).exists():
                raise ValidationError({"classCode": "Another class of this school has this code and term."})
        if course.institution_id != school.pk:
            raise ValidationError({"school": "A class cannot move to another school."})
        is_active = rec["status"] == RosterStatus.ACTIVE
        if (course.code, course.title, course.term, course.is_active) != (code, rec["title"], term, is_active):
            course.code, course.title, course.term, course.is_active = code, rec["title"], term, is_active
            classroom_services.course_save(course=course)
        self.link(Kind.CLASS, sourced_id, course.pk, {
            "course": catalog.sourced_id, "terms": [t.sourced_id for t in terms], "classType": rec["classType"],
            "location": rec["location"], "grades": rec["grades"], "subjects": rec["subjects"],
        })
        return course, created

    def user_upsert(self, sourced_id: str, rec: dict):
        email = User.objects.normalize_email(rec["email"]).lower()
        user = self.find(Kind.USER, sourced_id)
        created = False
        if user is None:
            user = User.objects.filter(email__iexact=email).first()
            if user is not None and not people_scoped_to(self.ids).filter(pk=user.pk).exists():
                # The address belongs to someone this district does not roster: never adopt (or reveal) them.
                raise ValidationError({"email": "This email address cannot be used for this user."})
            if user is not None and RosterLink.objects.filter(
                    district=self.district, kind=Kind.USER, object_id=user.pk).exists():
                raise ValidationError({"email": "Another user of this district has this email address."})
        elif user.email.lower() != email:
            raise ValidationError({"email": "A user's email address cannot be changed through rostering."})
        if user is None:
            username = rec["username"]
            if User.objects.filter(username__iexact=username).exists():
                username = email
            created = True
        else:
            username = user.username
        user = classroom_services.user_upsert(email=email, username=username, first_name=rec["givenName"],
                                              last_name=rec["familyName"], display_name=user.display_name
                                              if user and not created else "",
                                              date_of_birth=user.date_of_birth if user and not created else None)
        self._rows[(Kind.USER, user.pk)] = user
        active = rec["status"] == RosterStatus.ACTIVE and rec["enabledUser"]
        roles = []
        for role in rec["roles"]:
            school = self.school(role["org"]["sourcedId"], "roles")
            roles.append({"role": role["role"], "roleType": role["roleType"], "org": role["org"]["sourcedId"]})
            if role["role"] in {"guardian", "parent", "relative"}:
                for agent in rec["agents"]:
                    student = self.find(Kind.USER, agent["sourcedId"])
                    if student is None:
                        raise _unknown("agents", agent["sourcedId"])
                    if active:
                        classroom_services.guardianship_link(guardian=user, student=student, institution=school,
                                                             relationship=role["role"])
                continue
            aula_role = {"student": Role.STUDENT, "teacher": Role.TEACHER, "aide": Role.TA}[role["role"]]
            if active:
                classroom_services.membership_grant(user=user, institution=school, role=aula_role)
        if not active:
            for membership in scoped_to(Membership.objects.filter(user=user, is_active=True), self.ids):
                membership.is_active = False
                classroom_services.membership_save(membership=membership)
        self.link(Kind.USER, sourced_id, user.pk, {
            "identifier": rec["identifier"], "middleName": rec["middleName"], "enabledUser": rec["enabledUser"],
            "status": rec["status"], "roles": roles, "agents": [a["sourcedId"] for a in rec["agents"]],
            "grades": rec["grades"],
        })
        return user, created

    def enrollment_upsert(self, sourced_id: str, rec: dict):
        course = self.find(Kind.CLASS, rec["class"]["sourcedId"])
        if course is None:
            raise _unknown("class", rec["class"]["sourcedId"])
        user = self.find(Kind.USER, rec["user"]["sourcedId"])
        if user is None:
            raise _unknown("user", rec["user"]["sourcedId"])
        school = self.school(rec["school"]["sourcedId"])
        if course.institution_id != school.pk:
            raise ValidationError({"school": "The class is not at this school."})
        existing = self.find(Kind.ENROLLMENT, sourced_id)
        if existing is not None and (existing.course_id, existing.user_id) != (course.pk, user.pk):
            raise ValidationError({"sourcedId": "An enrollment cannot move to another class or user."})
        role = {"student": Role.STUDENT, "teacher": Role.TEACHER, "aide": Role.TA}[rec["role"]]
        if rec["status"] == RosterStatus.TO_BE_DELETED:
            if existing is None:
                raise ValidationError({"status": "There is no such enrollment to delete."})
            enrollment = classroom_services.enrollment_drop(enrollment=existing)
        else:
            enrollment = classroom_services.enrollment_upsert(course=course, user=user, role=role)
        self.link(Kind.ENROLLMENT, sourced_id, enrollment.pk, {
            "primary": rec["primary"], "beginDate": _iso(rec["beginDate"]), "endDate": _iso(rec["endDate"])})
        return enrollment, existing is None

    # --- tombstones: what a SIS marks `tobedeleted` or no longer lists -----------------------------------------

    def tombstone(self, kind: str, sourced_id: str) -> bool | None:
        """Mark this district's row with this sourcedId deleted, as an upsert with status `tobedeleted` would:
        an enrollment is dropped, a class deactivated, a person's memberships in this district's schools
        deactivated (the account stays: another district may roster them), a course or academic session gets
        the status. Needs no other field of the record. True when something changed, False when it already
        was deleted, None when the sourcedId is unknown here. Schools are refused (ValidationError)."""
        try:
            with transaction.atomic():
                return self._tombstone(kind, sourced_id)
        except BaseException:
            self.forget()
            raise

    def _tombstone(self, kind: str, sourced_id: str) -> bool | None:
        if kind in {"academicSession", "course"}:
            model = AcademicSession if kind == "academicSession" else CatalogCourse
            row = model.objects.select_for_update().filter(district=self.district, sourced_id=sourced_id).first()
            if row is None:
                return None
            if row.status == RosterStatus.TO_BE_DELETED:
                return False
            row.status = RosterStatus.TO_BE_DELETED
            row.save(update_fields=["status", "updated_at"])
            return True
        if kind == "org":
            if self.find(Kind.ORG, sourced_id) is None:
                return None
            raise ValidationError({"status": "Schools are not deleted through rostering; ask Aula support."})
        link = self._link_for(kind, sourced_id)
        row = self.find(kind, sourced_id) if link is not None else None
        if row is None:
            return None
        changed = False
        if kind == Kind.ENROLLMENT:
            if row.is_active:
                classroom_services.enrollment_drop(enrollment=row)
                changed = True
        elif kind == Kind.CLASS:
            if row.is_active:
                row.is_active = False
                classroom_services.course_save(course=row)
                changed = True
        elif kind == Kind.USER:
            for membership in scoped_to(Membership.objects.filter(user=row, is_active=True), self.ids):
                membership.is_active = False
                classroom_services.membership_save(membership=membership)
                changed = True
        if link.data.get("status") != RosterStatus.TO_BE_DELETED:
            link.data = {**link.data, "status": RosterStatus.TO_BE_DELETED}
            link.save(update_fields=["data", "updated_at"])
            changed = True
        return changed

    def sourced_ids(self, kind: str, *, live: bool = False):
        """Every sourcedId this district's roster holds for a resource (Aula's own `aula-` ids excluded); `live`:
        only those not deleted already (tombstoned, or an inactive class or enrollment)."""
        if kind in {"academicSession", "course"}:
            model = AcademicSession if kind == "academicSession" else CatalogCourse
            rows = model.objects.filter(district=self.district)
            if live:
                rows = rows.exclude(status=RosterStatus.TO_BE_DELETED)
        else:
            rows = RosterLink.objects.filter(district=self.district, kind=kind)
            if live:
                rows = rows.filter(Q(data__status__isnull=True) | ~Q(data__status=RosterStatus.TO_BE_DELETED))
                inactive = {Kind.CLASS: Course, Kind.ENROLLMENT: Enrollment}.get(kind)
                if inactive is not None:
                    rows = rows.exclude(object_id__in=inactive.objects.filter(is_active=False).values("pk"))
        return rows.exclude(sourced_id__startswith=AULA_PREFIX).values_list("sourced_id", flat=True)

    def held(self, kind: str, sourced_ids) -> set[str]:
        """Which of these sourcedIds this district's roster still holds: the link and its row (the row itself for
        academic sessions and courses). Two queries for a page of them, the links usually prefetched."""
        wanted = {s for s in sourced_ids if isinstance(s, str)}
        if not wanted:
            return set()
        if kind in {"academicSession", "course"}:
            model = AcademicSession if kind == "academicSession" else CatalogCourse
            return set(model.objects.filter(district=self.district, sourced_id__in=wanted)
                       .values_list("sourced_id", flat=True))
        # An org record is a school, or the district itself (linked as kind "district").
        kinds = [Kind.ORG, Kind.DISTRICT] if kind == Kind.ORG else [kind]
        linked: dict[str, tuple[str, int]] = {}
        for link_kind in kinds:
            self.prefetch(link_kind, wanted)
            for s in wanted:
                link = self._links.get((link_kind, s))
                if link is not None:
                    linked.setdefault(s, (link_kind, link.object_id))
        present: set[tuple[str, int]] = set()
        for link_kind in kinds:
            pks = {pk for k, pk in linked.values() if k == link_kind}
            if not pks:
                continue
            if link_kind == Kind.DISTRICT:
                rows = [pk for pk in pks if pk == self.district.pk]
            else:
                rows = (User.objects if link_kind == Kind.USER else self._candidates(link_kind)).filter(
                    pk__in=pks).values_list("pk", flat=True)
            present |= {(link_kind, pk) for pk in rows}
        return {s for s, key in linked.items() if key in present}

    def upsert(self, kind: str, sourced_id: str, rec: dict):
        """The one write path of a OneRoster record (REST PUT and CSV import): atomic, idempotent."""
        if not sourced_id or len(sourced_id) > 255:
            raise ValidationError({"sourcedId": "A sourcedId is 1 to 255 characters."})
        handler = {
            "org": self.org_upsert, "academicSession": self.academic_session_upsert, "course": self.course_upsert,
            "class": self.class_upsert, "user": self.user_upsert, "enrollment": self.enrollment_upsert,
        }[kind]
        try:
            with transaction.atomic():
                return handler(sourced_id, rec)
        except BaseException:
            self.forget()
            raise


def _iso(day) -> str | None:
    return day.isoformat() if day else None


def _own_upsert(model, district: District, sourced_id: str, values: dict):
    row = model.objects.select_for_update().filter(district=district, sourced_id=sourced_id).first()
    if row is None:
        return model.objects.create(district=district, sourced_id=sourced_id, **values), True
    changed = [k for k, v in values.items() if getattr(row, k) != v]
    if changed:
        for k in changed:
            setattr(row, k, values[k])
        row.full_clean()
        row.save()
    return row, False


# --- CSV bulk import ------------------------------------------------------------------------------------------

# Files in dependency order; each maps a CSV row to the same record the REST PUT accepts.
CSV_FILES = [
    ("orgs.csv", "org"),
    ("academicSessions.csv", "academicSession"),
    ("courses.csv", "course"),
    ("classes.csv", "class"),
    ("users.csv", "user"),
    ("enrollments.csv", "enrollment"),
]
MAX_ROWS = 200_000


def _ref(value: str) -> dict | None:
    return {"sourcedId": value.strip()} if value and value.strip() else None


def _list(value: str) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _bool(value: str) -> bool:
    return (value or "true").strip().lower() in {"true", "1", "yes"}


def _status(row: dict) -> str:
    return (row.get("status") or "active").strip() or "active"


def csv_record(kind: str, row: dict) -> dict:
    """A OneRoster CSV row (1.2 column names) as the record the REST PUT takes."""
    g = lambda name: (row.get(name) or "").strip()  # noqa: E731
    if kind == "org":
        return {"status": _status(row), "name": g("name"), "type": g("type"), "identifier": g("identifier"),
                "parent": _ref(g("parentSourcedId"))}
    if kind == "academicSession":
        return {"status": _status(row), "title": g("title"), "type": g("type"), "startDate": g("startDate"),
                "endDate": g("endDate"), "parent": _ref(g("parentSourcedId")), "schoolYear": g("schoolYear")}
    if kind == "course":
        return {"status": _status(row), "title": g("title"), "courseCode": g("courseCode"),
                "schoolYear": _ref(g("schoolYearSourcedId")), "org": _ref(g("orgSourcedId")),
                "grades": _list(g("grades")), "subjects": _list(g("subjects"))}
    if kind == "class":
        return {"status": _status(row), "title": g("title"), "classCode": g("classCode"),
                "classType": g("classType") or "scheduled", "location": g("location"),
                "course": _ref(g("courseSourcedId")), "school": _ref(g("schoolSourcedId")),
                "terms": [{"sourcedId": t} for t in _list(g("termSourcedIds"))],
                "grades": _list(g("grades")), "subjects": _list(g("subjects"))}
    if kind == "user":
        orgs = _list(g("orgSourcedIds"))
        roles = [{"roleType": "primary" if n == 0 else "secondary", "role": g("role"), "org": {"sourcedId": o}}
                 for n, o in enumerate(orgs)]
        return {"status": _status(row), "enabledUser": _bool(g("enabledUser")), "username": g("username"),
                "givenName": g("givenName"), "familyName": g("familyName"), "middleName": g("middleName"),
                "email": g("email"), "identifier": g("identifier"), "roles": roles,
                "agents": [{"sourcedId": a} for a in _list(g("agentSourcedIds"))], "grades": _list(g("grades"))}
    if kind == "enrollment":
        return {"status": _status(row), "class": _ref(g("classSourcedId")), "school": _ref(g("schoolSourcedId")),
                "user": _ref(g("userSourcedId")), "role": g("role"), "primary": _bool(g("primary") or "false"),
                "beginDate": g("beginDate") or None, "endDate": g("endDate") or None}
    raise ValueError(kind)


@dataclass
class ImportReport:
    """What an import did (`created`/`updated` per file) or, when anything failed, every failing row."""

    applied: bool = False
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"applied": self.applied, "created": self.created, "updated": self.updated, "errors": self.errors}


class _Rollback(Exception):
    pass


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in detail.items()}
    return {"non_field_errors": [str(m) for m in (detail if isinstance(detail, list) else [detail])]}


def roster_csv_import(*, district: District, archive: bytes) -> ImportReport:
    """Import a OneRoster CSV zip for one district: every file and row or nothing.

    Each row goes through `Roster.upsert` (the REST PUT's path), so re-importing the same files changes
    nothing. On any error the whole import is rolled back and the report lists every failing row
    (file, line, sourcedId, field errors) of every file."""
    report = ImportReport()
    try:
        bundle = zipfile.ZipFile(io.BytesIO(archive))
        names = {name.rsplit("/", 1)[-1]: name for name in bundle.namelist() if not name.endswith("/")}
    except zipfile.BadZipFile:
        report.errors.append({"file": None, "line": None, "sourcedId": None,
                              "errors": {"file": ["Not a zip archive."]}})
        return report
    unknown = sorted(set(names) - {f for f, _ in CSV_FILES} - {"manifest.csv"})
    for name in unknown:
        report.errors.append({"file": name, "line": None, "sourcedId": None,
                              "errors": {"file": ["Not a OneRoster rostering file this import reads."]}})
    if not any(f in names for f, _ in CSV_FILES):
        report.errors.append({"file": None, "line": None, "sourcedId": None,
                              "errors": {"file": ["The archive holds none of: " +
                                                  ", ".join(f for f, _ in CSV_FILES)]}})
    if report.errors:
        return report
    roster = Roster(district)
    try:
        with transaction.atomic():
            for filename, kind in CSV_FILES:
                if filename not in names:
                    continue
                _import_file(roster, kind, filename, bundle.read(names[filename]), report)
            if report.errors:
                raise _Rollback
            report.applied = True
    except _Rollback:
        report.created, report.updated = {}, {}
    return report


def _import_file(roster: Roster, kind: str, filename: str, content: bytes, report: ImportReport) -> None:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        report.errors.append({"file": filename, "line": None, "sourcedId": None,
                              "errors": {"file": ["Not UTF-8 text."]}})
        return
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames or "sourcedId" not in rows.fieldnames:
        report.errors.append({"file": filename, "line": 1, "sourcedId": None,
                              "errors": {"file": ["The header row has no sourcedId column."]}})
        return
    numbered = []
    for line, row in enumerate(rows, start=2):
        if line > MAX_ROWS + 1:
            report.errors.append({"file": filename, "line": line, "sourcedId": None,
                                  "errors": {"file": [f"More than {MAX_ROWS} rows."]}})
            return
        numbered.append((line, row))
    if kind == "user":
        # Guardians name their children in agentSourcedIds: people without agents first, whatever the file order.
        numbered.sort(key=lambda item: bool((item[1].get("agentSourcedIds") or "").strip()))
    created = updated = 0
    for line, row in numbered:
        sourced_id = (row.get("sourcedId") or "").strip()
        try:
            # A savepoint per row: a failing row is reported and the next rows still checked.
            with transaction.atomic():
                record = validate_record(kind, csv_record(kind, row))
                _, was_created = roster.upsert(kind, sourced_id, record)
        except serializers.ValidationError as exc:
            report.errors.append({"file": filename, "line": line, "sourcedId": sourced_id,
                                  "errors": _flatten(exc.detail)})
            continue
        except ValidationError as exc:
            details = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
            report.errors.append({"file": filename, "line": line, "sourcedId": sourced_id, "errors": details})
            continue
        created += was_created
        updated += not was_created
    report.created[filename], report.updated[filename] = created, updated


def roster_csv_upload(*, district: District, archive: bytes, filename: str, actor: User | None) -> RosterCsvImport:
    """The admin's CSV import: `roster_csv_import`, and its report kept (not the archive)."""
    report = roster_csv_import(district=district, archive=archive)
    return RosterCsvImport.objects.create(district=district, uploaded_by=actor, filename=filename[:255],
                                          sha256=hashlib.sha256(archive).hexdigest(), applied=report.applied,
                                          report=report.as_dict())
