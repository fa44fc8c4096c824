"""Credentials at rest (config/secrets.py): stored encrypted, masked when printed, re-encrypted by
`manage.py secrets_rotate` with the newest key while older keys still read."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from classrooms import lti_services, sso
from classrooms.models import IdentityProvider, LtiToolKey
from config import secrets
from tests import factories


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
    settings.AULA_SECRET_KEYS = [old_key]  # and a value is unreadable without its key: a clear error, on use
    unreadable = LtiToolKey.objects.get(pk=key.pk).private_key
    with pytest.raises(secrets.UnreadableSecret, match="classrooms.LtiToolKey.private_key.*cannot be read with any key"):
        unreadable.reveal()
    secrets._fernet.cache_clear()


SECRET = "oidc-client-secret-0123456789"


def _provider(district, slug: str, secret: str = SECRET) -> IdentityProvider:
    return IdentityProvider.objects.create(
        district=district, slug=slug, kind=IdentityProvider.Kind.OIDC, display_name=f"Sign-in {slug}",
        oidc_issuer="https://idp.example.test", oidc_client_id="aula", oidc_client_secret=secret)


def _stored_secret(pk: int) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT oidc_client_secret FROM classrooms_identityprovider WHERE id = %s", [pk])
        return cur.fetchone()[0]


@pytest.mark.django_db
def test_an_unreadable_credential_breaks_only_its_own_use(settings, client):
    """An old key dropped before secrets_rotate finished: the rows still load (the sign-in page lists every
    district's providers), and only revealing that one credential fails, saying which column it is."""
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.AULA_SECRET_KEYS = [old_key]
    district = factories.district()
    stale = _provider(district, "stale")
    settings.AULA_SECRET_KEYS = [new_key]
    fresh = _provider(district, "fresh", "fresh-secret-value")
    assert {p.slug for p in IdentityProvider.objects.all()} == {"stale", "fresh"}
    assert {p.slug for p in sso.providers_for(district.slug)} == {"stale", "fresh"}
    page = client.get("/accounts/login/", {"district": district.slug})
    assert page.status_code == 200
    loaded = IdentityProvider.objects.get(pk=stale.pk)
    value = loaded.oidc_client_secret
    assert value and str(value) == "********" and repr(value) == "Secret('********')" and f"{value}" == "********"
    with pytest.raises(secrets.UnreadableSecret, match="classrooms.IdentityProvider.oidc_client_secret"):
        value.reveal()
    assert IdentityProvider.objects.get(pk=fresh.pk).oidc_client_secret.reveal() == "fresh-secret-value"
    # Saving the row for another change keeps the stored ciphertext as it was (no decryption needed).
    before = _stored_secret(stale.pk)
    loaded.display_name = "Renamed"
    loaded.save()
    assert _stored_secret(stale.pk) == before
    # A new value typed in replaces it, encrypted with the newest key.
    loaded.oidc_client_secret = "typed-again-secret"
    loaded.save()
    assert Fernet(new_key.encode()).decrypt(_stored_secret(stale.pk)[len("fernet:"):].encode()).decode() \
        == "typed-again-secret"
    assert IdentityProvider.objects.get(pk=stale.pk).oidc_client_secret.reveal() == "typed-again-secret"


@pytest.mark.django_db
def test_a_secret_compares_by_value_and_round_trips_unchanged(settings):
    settings.AULA_SECRET_KEYS = [Fernet.generate_key().decode()]
    provider = _provider(factories.district(), "p")
    assert isinstance(provider.oidc_client_secret, secrets.Secret)  # held as a Secret from assignment on
    a = IdentityProvider.objects.get(pk=provider.pk).oidc_client_secret
    b = IdentityProvider.objects.get(pk=provider.pk).oidc_client_secret
    assert a == b and a == SECRET and a != "" and a != "something else" and a is not None
    assert provider.oidc_client_secret == a
    stored = _stored_secret(provider.pk)
    again = IdentityProvider.objects.get(pk=provider.pk)
    again.save()
    assert _stored_secret(provider.pk) == stored
    with pytest.raises(TypeError):
        hash(a)


@pytest.mark.django_db
def test_secrets_rotate_reports_what_it_cannot_decrypt_and_rotates_the_rest(settings):
    lost_key, kept_key, newest = (Fernet.generate_key().decode() for _ in range(3))
    district = factories.district()
    settings.AULA_SECRET_KEYS = [lost_key]
    lost = _provider(district, "lost")
    settings.AULA_SECRET_KEYS = [kept_key]
    kept = _provider(district, "kept", "kept-secret-value")
    kept_before = _stored_secret(kept.pk)
    lost_before = _stored_secret(lost.pk)
    settings.AULA_SECRET_KEYS = [newest, kept_key]  # lost_key dropped too early
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=f"classrooms.IdentityProvider.oidc_client_secret pk={lost.pk}"):
        call_command("secrets_rotate", stdout=out, stderr=err)
    assert f"classrooms.IdentityProvider.oidc_client_secret pk={lost.pk}: cannot be decrypted" in err.getvalue()
    assert f"pk={kept.pk}" not in err.getvalue()
    # The readable one is re-encrypted with the newest key; the unreadable one is left as it was.
    assert _stored_secret(kept.pk) != kept_before
    assert Fernet(newest.encode()).decrypt(_stored_secret(kept.pk)[len("fernet:"):].encode()).decode() \
        == "kept-secret-value"
    assert _stored_secret(lost.pk) == lost_before
