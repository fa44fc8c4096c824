"""Delete all of a district's student data on the district's request, and print the certificate."""

import json

from django.core.management.base import BaseCommand, CommandError

from classrooms.models import District, User
from compliance import district_data


class Command(BaseCommand):
    help = "Delete all student data of one district (irreversible) and print the disposition certificate."

    def add_arguments(self, parser):
        parser.add_argument("district", help="The district's slug.")
        parser.add_argument("--requested-by", required=True, help="Who at the district asked (name, role).")
        parser.add_argument("--performed-by", help="Email of the Aula operator running it.")
        parser.add_argument("--confirm", required=True, help="The district's slug again.")

    def handle(self, *args, district, requested_by, performed_by, confirm, **options):
        target = District.objects.filter(slug=district).first()
        if target is None:
            raise CommandError(f"No district with slug {district!r}.")
        if confirm != district:
            raise CommandError("--confirm must repeat the district's slug.")
        operator = None
        if performed_by:
            operator = User.objects.filter(email__iexact=performed_by).first()
            if operator is None:
                raise CommandError(f"No user with email {performed_by!r}.")
        certificate = district_data.district_disposition_request(district=target, requested_by=requested_by,
                                                                 performed_by=operator, queue=False)
        certificate = district_data.district_dispose(certificate_id=certificate.pk)
        self.stdout.write(json.dumps({"certificate": certificate.certificate, "sha256": certificate.sha256},
                                     indent=2))
