"""Output serializers for the district roster API."""

from rest_framework import serializers

from classrooms.models import Course, Institution


class SchoolOut(serializers.ModelSerializer):
    district = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Institution
        fields = ["id", "slug", "name", "district", "timezone", "updated_at"]


class CourseOut(serializers.ModelSerializer):
    school = serializers.PrimaryKeyRelatedField(source="institution", read_only=True)
    teachers = serializers.SerializerMethodField()
    student_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Course
        fields = ["id", "school", "code", "title", "term", "is_active", "teachers", "student_count", "updated_at"]

    def get_teachers(self, course) -> list[dict]:
        return [{"id": e.user_id, "name": e.user.public_name} for e in course.teacher_enrollments]


class CourseFilter(serializers.Serializer):
    school = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    updated_since = serializers.DateTimeField(required=False)
