"""Credentials at rest (LTI private keys, OAuth client secrets, IdP certificates' keys): Fernet-encrypted fields.

Keys come from AULA_SECRET_KEYS (comma-separated Fernet keys, newest first). Every key in the list decrypts;
the first encrypts. Rotation: put a new key in front, deploy, run `manage.py secrets_rotate` (re-encrypts every
encrypted column with the new key), then drop the old key. Without AULA_SECRET_KEYS (development and tests
only; production refuses to start) one key is derived from SECRET_KEY.

Decryption is lazy: a row loads with its ciphertext and only `Secret.reveal()` decrypts. One value no listed
key can read (an old key dropped before `secrets_rotate` finished) then breaks only the one use of that
credential, not every query of its model (the sign-in page lists identity providers without their secrets).

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


class UnreadableSecret(ImproperlyConfigured):
    """A stored credential that no key in AULA_SECRET_KEYS decrypts."""


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


def _unreadable(where: str) -> UnreadableSecret:
    return UnreadableSecret(f"an encrypted credential{' (' + where + ')' if where else ''} cannot be read with "
                            "any key in AULA_SECRET_KEYS (was a key dropped before `secrets_rotate` finished?)")


def decrypt(stored: str, where: str = "") -> str:
    if not stored.startswith(PREFIX):
        raise _unreadable(where)
    try:
        return fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise _unreadable(where) from None


def rotate(stored: str, where: str = "") -> str:
    """The same plain text encrypted under the newest key. Raises UnreadableSecret."""
    if not stored.startswith(PREFIX):
        raise _unreadable(where)
    try:
        return PREFIX + fernet().rotate(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise _unreadable(where) from None


class Secret:
    """A credential: its ciphertext as stored, its plain text once known (assigned, or decrypted by `reveal()`).
    `repr()` and `str()` in logs, tracebacks and the admin never show the value. Not a `str`: nothing can use it
    as the plain text by accident."""

    __slots__ = ("_ciphertext", "_plain", "_where")

    def __init__(self, plain: str | None = None, *, ciphertext: str | None = None, where: str = ""):
        if plain is None and ciphertext is None:
            raise ValueError("a Secret needs its plain text or its ciphertext")
        self._plain = plain
        self._ciphertext = ciphertext
        self._where = where  # "app.Model.field", for the error message of an unreadable value

    @classmethod
    def stored(cls, ciphertext: str, where: str = "") -> Secret:
        return cls(ciphertext=ciphertext, where=where)

    @property
    def ciphertext(self) -> str:
        """What the column holds: the loaded ciphertext while the value is unchanged (saving it again rewrites
        the same bytes, readable or not), else the plain text encrypted with the newest key."""
        if self._ciphertext is None:
            self._ciphertext = encrypt(self._plain)
        return self._ciphertext

    def reveal(self) -> str:
        """The plain text. Raises UnreadableSecret when no key in AULA_SECRET_KEYS decrypts it."""
        if self._plain is None:
            self._plain = decrypt(self._ciphertext, self._where)
        return self._plain

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return True  # a Secret is never empty: an empty column is "" (or None), not a Secret

    def __eq__(self, other) -> bool:
        if isinstance(other, Secret):
            if self._ciphertext is not None and self._ciphertext == other._ciphertext:
                return True
            try:
                return self.reveal() == other.reveal()
            except UnreadableSecret:
                return False
        if isinstance(other, str):
            if not other:
                return False
            try:
                return self.reveal() == other
            except UnreadableSecret:
                return False
        return NotImplemented

    __hash__ = None  # equal to its plain text, which it does not decrypt just to be hashed

    def __reduce__(self):
        # Pickled (a cached model instance, a task argument) as its ciphertext only: never the plain text.
        return (_secret_from_ciphertext, (self.ciphertext, self._where))


def _secret_from_ciphertext(ciphertext: str, where: str) -> Secret:
    return Secret.stored(ciphertext, where)


class _SecretAttribute(DeferredAttribute):
    """Whatever is assigned (a form value, a service argument) is held as a `Secret` at once, not only after a
    reload: the model instance never carries the plain str that a log line or a traceback could print."""

    def __set__(self, instance, value):
        if isinstance(value, str) and value:
            value = Secret(value, where=self.field.where)
        instance.__dict__[self.field.attname] = value


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; reads give a `Secret` holding the ciphertext (`.reveal()` decrypts)."""

    descriptor_class = _SecretAttribute

    @property
    def where(self) -> str:
        model = getattr(self, "model", None)
        return f"{model._meta.label}.{self.name}" if model is not None else self.name or ""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return Secret.stored(value, self.where)

    def to_python(self, value):
        if value is None or value == "" or isinstance(value, Secret):
            return value
        if isinstance(value, str) and value.startswith(PREFIX):  # a stored value (a fixture, a raw column)
            return Secret.stored(value, self.where)
        return Secret(str(value), where=self.where)

    def get_prep_value(self, value):
        if value is None or value == "":
            return value
        if isinstance(value, Secret):
            return value.ciphertext
        return encrypt(str(value))


def encrypted_fields():
    """(model, field) for every EncryptedTextField in the project (used by secrets_rotate)."""
    from django.apps import apps

    for model in apps.get_models():
        for f in model._meta.concrete_fields:
            if isinstance(f, EncryptedTextField):
                yield model, f
