"""District roster API: the district's schools and courses (one view per operation, tenant-scoped)."""

from django.db.models import Count, Prefetch, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics

from classrooms.models import Course, Enrollment, Institution
from compliance.api import serializers
from compliance.api.permissions import DistrictReader, caller_scoped
from compliance.audit import AuditedAPIMixin
from config.api import DistrictClientThrottle


class DistrictAPIView(AuditedAPIMixin):
    """FERPA: objects handed to the output serializer are recorded reads, and a district client's read of
    student records a recorded disclosure (schools and courses carry none: nothing is written for them)."""

    permission_classes = [DistrictReader]
    throttle_classes = [DistrictClientThrottle]
    required_scopes = ["roster.read"]


@extend_schema(tags=["roster"])
class SchoolList(DistrictAPIView, generics.ListAPIView):
    """The schools of the caller's district."""

    serializer_class = serializers.SchoolOut

    def get_queryset(self):
        return caller_scoped(Institution.objects.select_related("district"), self.request)


@extend_schema(tags=["roster"])
class SchoolDetail(DistrictAPIView, generics.RetrieveAPIView):
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
        OpenApiParameter("school", int, description="Only courses of this school (of your district)."),
        OpenApiParameter("updated_since", str, description="ISO 8601 time: only courses changed since."),
    ],
)
class CourseList(DistrictAPIView, generics.ListAPIView):
    """Courses of the caller's district, with teachers and student counts."""

    serializer_class = serializers.CourseOut

    def get_queryset(self):
        filters = serializers.CourseFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        qs = _courses(self.request)
        if "school" in filters.validated_data:
            qs = qs.filter(institution_id=filters.validated_data["school"])
        if "updated_since" in filters.validated_data:
            qs = qs.filter(updated_at__gte=filters.validated_data["updated_since"])
        return qs


@extend_schema(tags=["roster"])
class CourseDetail(DistrictAPIView, generics.RetrieveAPIView):
    serializer_class = serializers.CourseOut

    def get_queryset(self):
        return _courses(self.request)
