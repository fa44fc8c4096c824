"""Writes of single sign-on: linking the asserted identity to the mapped account (ExternalIdentity, with
last_seen_at) and saving a provider's configuration. The protocol and the mapping are in classrooms/sso.py."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from classrooms.models import ExternalIdentity, IdentityProvider, User
from classrooms.sso import Refused, refuse_log

log = logging.getLogger("aula.sso")


def identity_link(*, provider: IdentityProvider, subject: str, user: User) -> ExternalIdentity:
    """The ExternalIdentity (kind, issuer, subject) of `provider` for `user`, created on the first sign-in and
    stamped with last_seen_at on each. An identity already linked to someone else is refused, not moved: the
    mapping changed under it, and a person must look at that."""
    kind = ExternalIdentity.Kind(provider.kind)
    now = timezone.now()
    for _ in range(2):  # a concurrent first sign-in of the same person may win the insert: read theirs
        with transaction.atomic():
            identity = (ExternalIdentity.objects.select_for_update()
                        .filter(kind=kind, issuer=provider.issuer, subject=subject).first())
            if identity is not None:
                if identity.user_id != user.pk:
                    refuse_log(provider, "identity_conflict")
                    raise Refused("identity_conflict")
                identity.last_seen_at = now
                identity.save(update_fields=["last_seen_at"])
                return identity
            try:
                with transaction.atomic():
                    return ExternalIdentity.objects.create(district=provider.district, user=user, kind=kind,
                                                           issuer=provider.issuer, subject=subject,
                                                           last_seen_at=now)
            except IntegrityError:
                continue
    raise Refused("identity_conflict")


def sign_in_record(*, provider: IdentityProvider, subject: str, user: User) -> ExternalIdentity:
    """Everything a successful SSO sign-in writes before the session is opened (the view then calls Django's
    login(), which rotates the session key)."""
    identity = identity_link(provider=provider, subject=subject, user=user)
    log.info("sso sign-in: provider=%s district=%s kind=%s user=%s", provider.pk, provider.district_id,
             provider.kind, user.pk, extra={"sso_provider": provider.pk, "sso_district": provider.district_id,
                                   "sso_kind": provider.kind, "sso_user": user.pk})
    return identity


def identity_provider_save(*, provider: IdentityProvider, actor: User | None = None) -> IdentityProvider:
    """Create or update a provider's configuration (the admin's one write path). A SAML provider left with the
    field's default claim ("sub", an OIDC claim) maps the NameID, and is saved saying so."""
    if provider.kind == IdentityProvider.Kind.SAML and provider.identity_claim.strip() in {"", "sub"}:
        provider.identity_claim = "NameID"
    with transaction.atomic():
        provider.full_clean(exclude=["oidc_client_secret", "saml_sp_private_key"])
        provider.save()
    log.info("sso provider saved: provider=%s district=%s actor=%s", provider.pk, provider.district_id,
             actor.pk if actor else None, extra={"sso_provider": provider.pk, "sso_district": provider.district_id,
                                          "actor_id": actor.pk if actor else None})
    return provider
