"""Credentials at rest (config/secrets.py): stored encrypted, masked when printed, re-encrypted by
`manage.py secrets_rotate` with the newest key while older keys still read."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from classrooms import lti_services
from classrooms.models import LtiToolKey
from config import secrets


def _stored(pk: int) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT private_key FROM classrooms_ltitoolkey WHERE id = %s", [pk])
        return cur.fetchone()[0]


@pytest.mark.django_db
def test_a_credential_is_stored_encrypted_masked_when_printed_and_rotated_to_a_new_key(settings):
    old_key = Fernet.generate_key().decode()
    settings.AULA_SECRET_KEYS = [old_key]
    key = lti_services.signing_key()
    pem = LtiToolKey.objects.get(pk=key.pk).private_key
    assert pem.reveal().startswith("-----BEGIN PRIVATE KEY-----")
    assert str(pem) == "********" and repr(pem) == "Secret('********')" and "PRIVATE" not in f"{pem} {pem!r}"
    before = _stored(key.pk)
    assert before.startswith("fernet:") and "PRIVATE" not in before
    assert Fernet(old_key.encode()).decrypt(before[len("fernet:"):].encode()).decode() == pem.reveal()

    new_key = Fernet.generate_key().decode()
    settings.AULA_SECRET_KEYS = [new_key, old_key]  # rotation: the new key first, the old one still listed
    out = io.StringIO()
    call_command("secrets_rotate", stdout=out)
    assert "re-encrypted with the newest key" in out.getvalue()
    after = _stored(key.pk)
    assert after != before
    assert Fernet(new_key.encode()).decrypt(after[len("fernet:"):].encode()).decode() == pem.reveal()
    settings.AULA_SECRET_KEYS = [new_key]  # the old key can now be dropped
    assert LtiToolKey.objects.get(pk=key.pk).private_key.reveal() == pem.reveal()
    settings.AULA_SECRET_KEYS = [old_key]  # and a value is unreadable without its key: a clear error
    with pytest.raises(Exception, match="cannot be read with any key"):
        LtiToolKey.objects.get(pk=key.pk)
    secrets._fernet.cache_clear()
