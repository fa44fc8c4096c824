"""`manage.py ferpa_record <student> [--from YYYY-MM-DD] [--to YYYY-MM-DD]`: a student's FERPA record of
access and of disclosures, as CSV on stdout (for an operator answering a records request the school passed
on). Reading it is itself recorded, with the command as its path."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from classrooms.models import User
from compliance import audit
from compliance.models import AccessEntry, Disclosure
from config.exports import csv_writer


class Command(BaseCommand):
    help = "Print a student's access and disclosure records as CSV."
    ferpa_reads = ("classrooms.User",)

    def add_arguments(self, parser):
        parser.add_argument("student", help="user id, e-mail or username")
        parser.add_argument("--from", dest="start", type=dt.date.fromisoformat)
        parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, help="inclusive")

    def handle(self, *args, student, start=None, end=None, **options):
        lookup = {"pk": int(student)} if student.isdigit() else {"email__iexact": student}
        user = User.objects.filter(**lookup).first() or User.objects.filter(username__iexact=student).first()
        if user is None:
            raise CommandError("no such user")
        tz = timezone.get_current_timezone()
        accesses = AccessEntry.objects.filter(additional_data__student=user.pk).select_related("actor")
        disclosed = Disclosure.objects.filter(student=user)
        if start:
            since = dt.datetime.combine(start, dt.time(), tz)
            accesses, disclosed = accesses.filter(timestamp__gte=since), disclosed.filter(disclosed_at__gte=since)
        if end:
            until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tz)
            accesses, disclosed = accesses.filter(timestamp__lt=until), disclosed.filter(disclosed_at__lt=until)
        accesses, disclosed = list(accesses.order_by("timestamp", "pk")), list(disclosed.order_by("disclosed_at", "pk"))
        with audit.job("manage.py ferpa_record", via="command"):
            audit.record_access(actor=None, objects=[user], purpose="ferpa.record_export", role="operator")
        writer = csv_writer(self.stdout)  # formula-safe cells
        writer.writerow(["kind", "time", "party", "role_or_basis", "purpose_or_interest", "record_or_categories",
                         "via", "path", "institution_id"])
        for e in accesses:
            data = e.additional_data or {}
            party = e.actor_email or (f"district API client {data['client']}" if data.get("client") else "system")
            writer.writerow(["access", e.timestamp.isoformat(), party, data.get("role"), data.get("purpose"),
                             e.object_repr, data.get("via"), data.get("path"), data.get("institution")])
        for d in disclosed:
            writer.writerow(["disclosure", d.disclosed_at.isoformat(), d.receiving_party, d.get_basis_display(),
                             d.legitimate_interest, ", ".join(d.data_categories or []), d.get_via_display(), "",
                             d.institution_id])
