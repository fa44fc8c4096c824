"""District roster API: the district's schools and courses, and the OneRoster CSV import (one view per
operation, tenant-scoped)."""

from django.db.models import Count, Prefetch, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers as serializers_
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from classrooms.models import Course, Enrollment, Institution
from compliance import rostering, selectors
from compliance.api import serializers
from compliance.api.base import DistrictAPIView, DistrictDetailView, DistrictListView
from compliance.api.permissions import caller_scoped
from config.api import error_body, id_parameter, query_filters


@extend_schema(tags=["roster"])
class SchoolList(DistrictListView):
    """The schools of the caller's district."""

    serializer_class = serializers.SchoolOut

    def get_queryset(self):
        return caller_scoped(Institution.objects.select_related("district"), self.request)


@extend_schema(tags=["roster"])
class SchoolDetail(DistrictDetailView):
    serializer_class = serializers.SchoolOut

    def get_queryset(self):
        return caller_scoped(Institution.objects.select_related("district"), self.request)


def _courses(request):
    teachers = Prefetch(
        "enrollments",
        queryset=Enrollment.objects.filter(role__in=["teacher", "ta"], is_active=True).select_related("user"),
        to_attr="teacher_enrollments",
    )
    return (
        caller_scoped(Course.objects.all(), request)
        .annotate(student_count=Count("enrollments", filter=Q(enrollments__role="student",
                                                               enrollments__is_active=True)))
        .prefetch_related(teachers)
    )


@extend_schema(
    tags=["roster"],
    parameters=[
        id_parameter("school", "Only courses of this school (of your district)."),
        OpenApiParameter("updated_since", OpenApiTypes.DATETIME, description="ISO 8601 time: only courses changed "
                         "since."),
    ],
)
class CourseList(DistrictListView):
    """Courses of the caller's district, with teachers and student counts."""

    serializer_class = serializers.CourseOut

    def get_queryset(self):
        filters = query_filters(serializers.CourseFilter, self.request)
        qs = _courses(self.request)
        if "school" in filters:
            qs = qs.filter(institution_id=filters["school"])
        if "updated_since" in filters:
            qs = qs.filter(updated_at__gte=filters["updated_since"])
        return qs


@extend_schema(tags=["roster"])
class CourseDetail(DistrictDetailView):
    serializer_class = serializers.CourseOut

    def get_queryset(self):
        return _courses(self.request)


class RosterImportIn(serializers_.Serializer):
    file = serializers_.FileField(help_text="A zip of OneRoster 1.2 CSV files (orgs.csv, academicSessions.csv, "
                                  "courses.csv, classes.csv, users.csv, enrollments.csv; any subset).")


class RosterImportOut(serializers_.Serializer):
    applied = serializers_.BooleanField()
    created = serializers_.DictField(child=serializers_.IntegerField())
    updated = serializers_.DictField(child=serializers_.IntegerField())
    errors = serializers_.ListField(child=serializers_.DictField())


@extend_schema(tags=["oneroster"])
class RosterImport(DistrictAPIView):
    """OneRoster CSV bulk import: all files and rows, or nothing (400 with every failing row)."""

    base_scopes = ["roster.write"]
    clients_only = True
    parser_classes = [MultiPartParser]
    max_bytes = 50 * 1024 * 1024

    @extend_schema(request={"multipart/form-data": RosterImportIn}, responses={200: RosterImportOut})
    def post(self, request, *args, **kwargs):
        data = RosterImportIn(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > self.max_bytes:
            raise ValidationError({"file": [f"At most {self.max_bytes // (1024 * 1024)} MB."]})
        client = selectors.api_client_for_token(request.auth)
        report = rostering.roster_csv_import(district=client.district, archive=upload.read())
        if not report.applied:
            return Response(error_body("invalid", "Nothing was imported: see details.errors.",
                                       report.as_dict(), status_code=400), status=400)
        return Response(report.as_dict())
