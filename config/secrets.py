"""Credentials at rest (LTI private keys, OAuth client secrets, IdP certificates' keys): Fernet-encrypted fields.

Keys come from AULA_SECRET_KEYS (comma-separated Fernet keys, newest first). Every key in the list decrypts;
the first encrypts. Rotation: put a new key in front, deploy, run `manage.py secrets_rotate` (re-encrypts every
encrypted column with the new key), then drop the old key. Without AULA_SECRET_KEYS (development and tests
only; production refuses to start) one key is derived from SECRET_KEY.

MultiFernet is from `cryptography` (https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet):
AES-128-CBC + HMAC-SHA256 with a timestamp; `rotate()` re-encrypts under the primary key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.query_utils import DeferredAttribute

PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("AULA_SECRET_KEYS is empty")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except ValueError:
        raise ImproperlyConfigured("AULA_SECRET_KEYS holds a value that is not a Fernet key") from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.AULA_SECRET_KEYS))


def encrypt(plain: str) -> str:
    return PREFIX + fernet().encrypt(plain.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise ValueError("not an encrypted value")
    try:
        return fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("an encrypted credential cannot be read with any key in AULA_SECRET_KEYS") from None


def rotate(stored: str) -> str:
    return PREFIX + fernet().rotate(stored[len(PREFIX):].encode()).decode()


class Secret(str):
    """A decrypted credential: `repr()` and `str()` in logs, tracebacks and the admin never show the value."""

    def __repr__(self) -> str:
        return "Secret('********')"

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return "********"


class _SecretAttribute(DeferredAttribute):
    """Whatever is assigned (a form value, a service argument) is held as a `Secret` at once, not only after a
    reload: the model instance never carries the plain str that a log line or a traceback could print."""

    def __set__(self, instance, value):
        if isinstance(value, str) and value and not isinstance(value, Secret):
            value = Secret(value)
        instance.__dict__[self.field.attname] = value


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; reads give a `Secret` (call `.reveal()` for the plain text)."""

    descriptor_class = _SecretAttribute

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return Secret(decrypt(value))

    def to_python(self, value):
        if value is None or value == "" or isinstance(value, Secret):
            return value
        if isinstance(value, str) and value.startswith(PREFIX):
            return Secret(decrypt(value))
        return Secret(value)

    def get_prep_value(self, value):
        if value is None or value == "":
            return value
        plain = value.reveal() if isinstance(value, Secret) else str(value)
        return encrypt(plain)


def encrypted_fields():
    """(model, field) for every EncryptedTextField in the project (used by secrets_rotate)."""
    from django.apps import apps

    for model in apps.get_models():
        for f in model._meta.concrete_fields:
            if isinstance(f, EncryptedTextField):
                yield model, f
