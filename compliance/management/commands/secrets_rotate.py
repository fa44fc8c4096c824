"""Re-encrypt every stored credential with the first key of AULA_SECRET_KEYS (config/secrets.py)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from config import secrets


class Command(BaseCommand):
    help = ("Re-encrypt every encrypted credential column with the newest key in AULA_SECRET_KEYS. A value no "
            "listed key reads is reported (model and pk) and left as it is; the others are still re-encrypted, "
            "and the command then exits non-zero.")

    def handle(self, *args, **options):
        total, unreadable = 0, []
        for model, field in secrets.encrypted_fields():
            column = field.attname
            label = f"{model._meta.label}.{column}"
            done = 0
            with transaction.atomic():
                rows = model.objects.select_for_update().exclude(**{column: ""}).exclude(**{f"{column}__isnull": True})
                # Row by row through save() (bulk writes of these models are refused, compliance.audit.BULK_POLICY);
                # the column is excluded from the audit log, so only the ciphertext changes.
                for row in rows.order_by("pk"):
                    stored = getattr(row, column)
                    try:
                        rotated = secrets.rotate(stored.ciphertext, label)
                    except secrets.UnreadableSecret:
                        unreadable.append((label, row.pk))
                        self.stderr.write(f"{label} pk={row.pk}: cannot be decrypted with any key in "
                                          "AULA_SECRET_KEYS; left unchanged")
                        continue
                    setattr(row, column, secrets.Secret.stored(rotated, label))
                    row.save(update_fields=[column])
                    done += 1
            total += done
            self.stdout.write(f"{label}: {done} re-encrypted")
        self.stdout.write(f"{total} credential(s) re-encrypted with the newest key.")
        if unreadable:
            raise CommandError(f"{len(unreadable)} credential(s) could not be decrypted with any key in "
                               "AULA_SECRET_KEYS: " + ", ".join(f"{label} pk={pk}" for label, pk in unreadable)
                               + ". Restore the key that encrypted them, or enter these credentials again.")
