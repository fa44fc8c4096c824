"""Re-encrypt every stored credential with the first key of AULA_SECRET_KEYS (config/secrets.py)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from config import secrets


class Command(BaseCommand):
    help = "Re-encrypt every encrypted credential column with the newest key in AULA_SECRET_KEYS."

    def handle(self, *args, **options):
        total = 0
        for model, field in secrets.encrypted_fields():
            column = field.attname
            with transaction.atomic():
                rows = model.objects.select_for_update().exclude(**{column: ""}).exclude(**{f"{column}__isnull": True})
                # Reading decrypts with any listed key; saving encrypts with the newest. Row by row through
                # save() (bulk writes of these models are refused, compliance.audit.BULK_POLICY); the column is
                # excluded from the audit log, so only the ciphertext changes.
                for row in rows:
                    row.save(update_fields=[column])
                    total += 1
            self.stdout.write(f"{model._meta.label}.{column}: re-encrypted")
        self.stdout.write(f"{total} credential(s) re-encrypted with the newest key.")
