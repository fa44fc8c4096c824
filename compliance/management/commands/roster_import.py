"""Import a OneRoster 1.2 CSV zip for one district (all or nothing; prints the per-row error report)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from classrooms.models import District
from compliance.rostering import roster_csv_import


class Command(BaseCommand):
    help = "Import a OneRoster CSV zip (orgs, academicSessions, courses, classes, users, enrollments) for a district."

    def add_arguments(self, parser):
        parser.add_argument("district", help="The district's slug.")
        parser.add_argument("archive", type=Path, help="The zip of OneRoster CSV files.")

    def handle(self, *args, district, archive, **options):
        target = District.objects.filter(slug=district).first()
        if target is None:
            raise CommandError(f"No district with slug {district!r}.")
        if not archive.is_file():
            raise CommandError(f"No such file: {archive}")
        report = roster_csv_import(district=target, archive=archive.read_bytes())
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.applied:
            raise CommandError(f"Nothing imported: {len(report.errors)} error(s).")
