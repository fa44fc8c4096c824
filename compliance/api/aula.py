"""Aula's own district resources: live sessions and their attendance, exam results, the access log of the
district's students, and the district data export. Aula ids (integers); every row is tenant-scoped."""

from __future__ import annotations

from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from classrooms.models import AttendanceRecord, LiveSession
from compliance import district_data, selectors
from compliance.api.base import DistrictAPIView, DistrictDetailView, DistrictListView
from compliance.models import AccessEntry, Disclosure, DistrictExport
from config.api import id_parameter, query_filters
from exams.models import Attempt

# --- filters -------------------------------------------------------------------------------------------------


class SessionFilter(serializers.Serializer):
    course = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(required=False, choices=LiveSession.Status.choices)


class ResultFilter(serializers.Serializer):
    course = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    exam = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    student = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


class AccessFilter(serializers.Serializer):
    student = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


def _int_params(*names: str) -> list[OpenApiParameter]:
    return [id_parameter(n) for n in names]


# --- live sessions and attendance ---------------------------------------------------------------------------


class LiveSessionOut(serializers.ModelSerializer):
    course = serializers.IntegerField(source="course_id")
    school = serializers.IntegerField(source="institution_id")

    class Meta:
        model = LiveSession
        fields = ["id", "course", "school", "title", "status", "scheduled_start", "started_at", "ended_at"]


class LiveSessionRows(DistrictAPIView):
    serializer_class = LiveSessionOut

    def get_queryset(self):
        return self.scoped(LiveSession.objects.all())


@extend_schema(tags=["sessions"], parameters=[*_int_params("course"), OpenApiParameter(
    "status", str, enum=[s for s, _ in LiveSession.Status.choices])])
class LiveSessionList(LiveSessionRows, DistrictListView):
    """Live class sessions of the district's courses."""

    def get_queryset(self):
        filters = query_filters(SessionFilter, self.request)
        qs = super().get_queryset()
        if "course" in filters:
            qs = qs.filter(course_id=filters["course"])
        if "status" in filters:
            qs = qs.filter(status=filters["status"])
        return qs


@extend_schema(tags=["sessions"])
class LiveSessionDetail(LiveSessionRows, DistrictDetailView):
    pass


class AttendanceOut(serializers.ModelSerializer):
    session = serializers.IntegerField(source="session_id")
    student = serializers.IntegerField(source="user_id")

    class Meta:
        model = AttendanceRecord
        fields = ["id", "session", "student", "status", "first_join", "last_leave", "present_seconds",
                  "active_seconds", "idle_seconds", "reconnects", "chat_messages", "poll_answers", "hand_raises",
                  "engagement_score", "computed_at"]


@extend_schema(tags=["sessions"])
class AttendanceList(DistrictListView):
    """Attendance of one live session (docs/attendance.md explains the statuses)."""

    serializer_class = AttendanceOut
    base_scopes = ["results.read"]

    def get_queryset(self):
        session = self.scoped(LiveSession.objects.all()).filter(pk=self.kwargs["pk"]).first()
        if session is None:
            raise Http404
        return self.scoped(AttendanceRecord.objects.filter(session=session))


# --- exam results -------------------------------------------------------------------------------------------


class ResultOut(serializers.ModelSerializer):
    exam = serializers.IntegerField(source="exam_id")
    exam_title = serializers.CharField(source="exam.title")
    course = serializers.IntegerField(source="exam.course_id")
    student = serializers.IntegerField(source="student_id")
    released = serializers.SerializerMethodField()

    class Meta:
        model = Attempt
        fields = ["id", "exam", "exam_title", "course", "student", "number", "state", "finish_reason", "finished_at",
                  "score", "max_score", "needs_manual_grading", "graded_at", "released"]

    def get_released(self, attempt) -> bool:
        return attempt.exam.grades_released_at is not None


@extend_schema(tags=["results"], parameters=_int_params("course", "exam", "student"))
class ResultList(DistrictListView):
    """Finished exam attempts with their scores (submitted, or closed at the deadline)."""

    serializer_class = ResultOut
    base_scopes = ["results.read"]

    def get_queryset(self):
        filters = query_filters(ResultFilter, self.request)
        qs = self.scoped(Attempt.objects.filter(state=Attempt.State.SUBMITTED).select_related("exam"))
        if "course" in filters:
            qs = qs.filter(exam__course_id=filters["course"])
        if "exam" in filters:
            qs = qs.filter(exam_id=filters["exam"])
        if "student" in filters:
            qs = qs.filter(student_id=filters["student"])
        return qs


# --- the access log of the district's students ----------------------------------------------------------------


def _audit_filtered(qs, request, *, student: str, time: str):
    """The audit resources' filters: ?student=, ?since= (inclusive), ?until= (exclusive)."""
    filters = query_filters(AccessFilter, request)
    if "student" in filters:
        qs = qs.filter(**{student: filters["student"]})
    if "since" in filters:
        qs = qs.filter(**{f"{time}__gte": filters["since"]})
    if "until" in filters:
        qs = qs.filter(**{f"{time}__lt": filters["until"]})
    return qs.order_by("pk")


class AccessOut(serializers.ModelSerializer):
    """One FERPA access entry (compliance.audit): which student's record, what record, who, why, how."""

    student = serializers.SerializerMethodField()
    record = serializers.CharField(source="object_repr")
    actor = serializers.IntegerField(source="actor_id", allow_null=True)
    actor_name = serializers.SerializerMethodField()
    purpose = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()
    via = serializers.SerializerMethodField()
    institution = serializers.SerializerMethodField()

    class Meta:
        model = AccessEntry
        fields = ["id", "timestamp", "student", "record", "actor", "actor_name", "purpose", "role", "via",
                  "institution"]

    @staticmethod
    def _data(entry, key):
        return (entry.additional_data if isinstance(entry.additional_data, dict) else {}).get(key)

    def get_student(self, entry) -> int | None:
        return self._data(entry, "student")

    def get_actor_name(self, entry) -> str:
        if entry.actor_email:
            return entry.actor_email
        client = self._data(entry, "client")
        return f"district API client {client}" if client else "system"

    def get_purpose(self, entry) -> str:
        return str(self._data(entry, "purpose") or "")

    def get_role(self, entry) -> str:
        return str(self._data(entry, "role") or "")

    def get_via(self, entry) -> str:
        return str(self._data(entry, "via") or "")

    def get_institution(self, entry) -> int | None:
        return self._data(entry, "institution")


@extend_schema(tags=["audit"], parameters=[*_int_params("student"),
                                            OpenApiParameter("since", OpenApiTypes.DATETIME),
                                            OpenApiParameter("until", OpenApiTypes.DATETIME)])
class AccessLogList(DistrictListView):
    """Who accessed the records of the district's students, and when: FERPA's access entries (django-auditlog
    ACCESS entries written by compliance.audit) made at the district's schools."""

    serializer_class = AccessOut
    base_scopes = ["audit.read"]

    def get_queryset(self):
        qs = self.scoped(AccessEntry.objects.all()).filter(additional_data__has_key="student")
        return _audit_filtered(qs, self.request, student="additional_data__student", time="timestamp")


class DisclosureOut(serializers.ModelSerializer):
    basis = serializers.CharField(source="get_basis_display")
    via = serializers.CharField(source="get_via_display")

    class Meta:
        model = Disclosure
        fields = ["id", "disclosed_at", "student", "institution", "receiving_party", "basis",
                  "legitimate_interest", "data_categories", "via", "disclosed_by_name"]


@extend_schema(tags=["audit"], parameters=[*_int_params("student"),
                                            OpenApiParameter("since", OpenApiTypes.DATETIME),
                                            OpenApiParameter("until", OpenApiTypes.DATETIME)])
class DisclosureLogList(DistrictListView):
    """FERPA's record of disclosures of the district's students' records to outside parties (99.32)."""

    serializer_class = DisclosureOut
    base_scopes = ["audit.read"]

    def get_queryset(self):
        return _audit_filtered(self.scoped(Disclosure.objects.all()), self.request, student="student_id",
                               time="disclosed_at")


# --- district data export ------------------------------------------------------------------------------------


class ExportOut(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()

    class Meta:
        model = DistrictExport
        fields = ["id", "status", "created_at", "finished_at", "sha256", "counts", "download"]

    def get_download(self, export) -> str | None:
        return f"/api/v1/exports/{export.pk}/download/" if export.status == DistrictExport.Status.DONE else None


class ExportRows(DistrictAPIView):
    serializer_class = ExportOut
    base_scopes = ["district.export"]
    clients_only = True

    def get_queryset(self):
        return self.scoped(DistrictExport.objects.filter(district_id=selectors.api_district_id(self.request)))


@extend_schema(tags=["export"])
class ExportCreate(ExportRows):
    """Start an export of all of the district's data (a Celery job); poll the export, then download it."""

    pagination_class = None

    @extend_schema(request=None, responses={202: ExportOut})
    def post(self, request, *args, **kwargs):
        client = selectors.api_client_for_token(request.auth)
        export = district_data.district_export_request(district=client.district, client=client)
        return Response(ExportOut(export).data, status=202)


@extend_schema(tags=["export"])
class ExportDetail(ExportRows, DistrictDetailView):
    pass


@extend_schema(tags=["export"])
class ExportDownload(ExportRows):
    @extend_schema(responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY),
                              404: OpenApiResponse(description="No such export, or not finished yet")})
    def get(self, request, *args, **kwargs):
        export = self.get_object()
        self.records_read([export])
        if export.status != DistrictExport.Status.DONE or not export.file:
            raise Http404
        return FileResponse(export.file.open("rb"), as_attachment=True, content_type="application/zip",
                            filename=f"aula-district-{export.district_id}-export-{export.pk}.zip")
