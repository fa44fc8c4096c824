"""OneRoster 1.2 records as a district's SIS sends them: the one validation for the REST upsert (PUT) and the
CSV bulk import, so both accept and refuse exactly the same data."""

from __future__ import annotations

from rest_framework import serializers

STATUSES = ["active", "tobedeleted"]
USER_ROLES = ["student", "teacher", "aide", "guardian", "parent", "relative"]
ENROLLMENT_ROLES = ["student", "teacher", "aide"]
SESSION_TYPES = ["schoolYear", "semester", "term", "gradingPeriod"]
ORG_TYPES = ["district", "school"]


class RefIn(serializers.Serializer):
    """A GUIDRef: only `sourcedId` is read (`href` and `type` are accepted and ignored)."""

    sourcedId = serializers.CharField(max_length=255)
    type = serializers.CharField(max_length=40, required=False)
    href = serializers.CharField(max_length=500, required=False)


class RecordIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=STATUSES, default="active")


def _strings(max_length: int = 100):
    return serializers.ListField(child=serializers.CharField(max_length=max_length), required=False, max_length=50,
                                 default=list)


class OrgIn(RecordIn):
    name = serializers.CharField(max_length=200)
    type = serializers.ChoiceField(choices=ORG_TYPES)
    identifier = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    parent = RefIn(required=False, allow_null=True)


class AcademicSessionIn(RecordIn):
    title = serializers.CharField(max_length=200)
    type = serializers.ChoiceField(choices=SESSION_TYPES)
    startDate = serializers.DateField()
    endDate = serializers.DateField()
    parent = RefIn(required=False, allow_null=True)
    schoolYear = serializers.IntegerField(min_value=1900, max_value=2999)

    def validate(self, attrs):
        if attrs["endDate"] < attrs["startDate"]:
            raise serializers.ValidationError({"endDate": "The session ends before it starts."})
        return attrs


class CourseIn(RecordIn):
    title = serializers.CharField(max_length=200)
    courseCode = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    schoolYear = RefIn(required=False, allow_null=True)
    org = RefIn(required=False, allow_null=True)
    grades = _strings(20)
    subjects = _strings()


class ClassIn(RecordIn):
    title = serializers.CharField(max_length=200)
    classCode = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    classType = serializers.ChoiceField(choices=["homeroom", "scheduled"], default="scheduled")
    location = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    course = RefIn()
    school = RefIn()
    terms = serializers.ListField(child=RefIn(), required=False, max_length=20, default=list)
    grades = _strings(20)
    subjects = _strings()


class RoleIn(serializers.Serializer):
    roleType = serializers.ChoiceField(choices=["primary", "secondary"], default="primary")
    role = serializers.ChoiceField(choices=USER_ROLES)
    org = RefIn()


class UserIn(RecordIn):
    enabledUser = serializers.BooleanField(default=True)
    username = serializers.CharField(max_length=150)
    givenName = serializers.CharField(max_length=150)
    familyName = serializers.CharField(max_length=150)
    middleName = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    email = serializers.EmailField(max_length=254)
    identifier = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    roles = serializers.ListField(child=RoleIn(), min_length=1, max_length=20)
    agents = serializers.ListField(child=RefIn(), required=False, max_length=20, default=list)
    grades = _strings(20)


class EnrollmentIn(RecordIn):
    role = serializers.ChoiceField(choices=ENROLLMENT_ROLES)
    primary = serializers.BooleanField(default=False)
    beginDate = serializers.DateField(required=False, allow_null=True, default=None)
    endDate = serializers.DateField(required=False, allow_null=True, default=None)
    user = RefIn()
    school = RefIn()
    # `class` is a Python keyword: the field is declared below under its OneRoster name.


EnrollmentIn._declared_fields["class"] = RefIn()

RECORDS = {
    "org": OrgIn,
    "academicSession": AcademicSessionIn,
    "course": CourseIn,
    "class": ClassIn,
    "user": UserIn,
    "enrollment": EnrollmentIn,
}


def validate_record(kind: str, data) -> dict:
    """The validated record, or serializers.ValidationError with per-field details."""
    record = RECORDS[kind](data=data)
    record.is_valid(raise_exception=True)
    return record.validated_data
