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
                # Reading decrypts with any listed key; writing encrypts with the newest. No signals, no save():
                # only the ciphertext changes.
                for pk, value in list(rows.values_list("pk", column)):
                    model.objects.filter(pk=pk).update(**{column: value})
                    total += 1
            self.stdout.write(f"{model._meta.label}.{column}: re-encrypted")
        self.stdout.write(f"{total} credential(s) re-encrypted with the newest key.")
