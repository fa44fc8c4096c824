"""FERPA's record of disclosures: writes (automatic for the district API and vendor exports, manual for
emergencies) and the reads staff use to give a guardian or eligible student their record."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from compliance.models import Disclosure, DistrictAPIClient

API_INTEREST = "Rostering and student information system sync for the district, under its data agreement"


def _rows(pairs: Iterable[tuple[int, int]], **fields) -> list[Disclosure]:
    return [Disclosure(student_id=student_id, institution_id=institution_id, **fields)
            for student_id, institution_id in sorted(set(pairs))]


def record_api_client_disclosure(*, client: DistrictAPIClient, accesses, categories: Iterable[str]) -> int:
    """A district API client read these student records (compliance.audit.Access): one disclosure row per
    student and school, in one insert. The client is a school official of the district (99.31(a)(1))."""
    now = timezone.now()
    rows = _rows({(a.student_id, a.institution_id) for a in accesses},
                 receiving_party=f"{client.name} (district API client {client.reference})"[:200],
                 basis=Disclosure.Basis.SCHOOL_OFFICIAL, legitimate_interest=API_INTEREST,
                 data_categories=sorted(set(categories)), disclosed_at=now, via=Disclosure.Via.API,
                 api_client=client)
    return len(Disclosure.objects.bulk_create(rows))


def record_vendor_export(*, party: str, students: Iterable[tuple[int, int]], categories: Iterable[str],
                         interest: str, reference: str, basis: str = Disclosure.Basis.SCHOOL_OFFICIAL) -> int:
    """Student data sent to a vendor (an LMS grade sync, an export): idempotent per `reference`, so a retried
    delivery is recorded once."""
    reference = reference[:100]
    students = set(students)
    done = set(Disclosure.objects.filter(reference=reference, student_id__in=[s for s, _ in students])
               .values_list("student_id", flat=True))
    rows = _rows({(s, i) for s, i in students if s not in done}, receiving_party=party[:200], basis=basis,
                 legitimate_interest=interest[:500], data_categories=sorted(set(categories)),
                 disclosed_at=timezone.now(), via=Disclosure.Via.VENDOR_EXPORT, reference=reference)
    # ignore_conflicts: two deliveries racing past the check above still record one row (unique constraint).
    return len(Disclosure.objects.bulk_create(rows, ignore_conflicts=True))


def record_manual_disclosure(*, student, institution_id: int, party: str, basis: str, interest: str,
                             categories: Iterable[str], disclosed_at, actor) -> Disclosure:
    """A disclosure made outside Aula (a health or safety emergency: 99.32(a)(5)), entered by school staff
    of the student's school."""
    from django.core.exceptions import PermissionDenied

    from classrooms.selectors import is_school_staff

    if not is_school_staff(actor, institution_id):
        raise PermissionDenied("not staff of this institution")
    with transaction.atomic():
        return Disclosure.objects.create(
            student=student, institution_id=institution_id, receiving_party=party, basis=basis,
            legitimate_interest=interest, data_categories=list(categories), disclosed_at=disclosed_at,
            via=Disclosure.Via.MANUAL, disclosed_by=actor, disclosed_by_name=actor.email or actor.username)


def record_grade_sync(*, sync_id: int) -> int:
    """A grade delivered to the LMS (exams.lms): recorded once per delivered result (its idempotency key)."""
    from urllib.parse import urlparse

    from django.conf import settings

    from exams.models import GradeSync

    row = (GradeSync.objects.filter(pk=sync_id, status=GradeSync.Status.DELIVERED)
           .values_list("student_id", "institution_id", "idempotency_key", "lti_link__context__platform__name",
                        "lti_link__context__platform__issuer").first())
    if row is None:
        return 0
    student_id, institution_id, key, platform, issuer = row
    if platform:
        party = f"LMS {platform} ({urlparse(issuer).hostname or issuer}, LTI grade services)"
    else:
        party = f"LMS grade webhook ({urlparse(settings.AULA_LMS_GRADE_WEBHOOK).hostname or 'LMS'})"
    return record_vendor_export(party=party[:200], students=[(student_id, institution_id)],
                                categories=["grades"], interest="Grade passback to the school's learning "
                                "management system", reference=f"gradesync:{key}")
