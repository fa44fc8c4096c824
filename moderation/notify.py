"""Who is told when an item reaches a tier, and the email they get (no content in it, only a link)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mass_mail
from django.db.models import Q

from classrooms.models import DistrictRole, Enrollment, Institution, Membership, Role
from moderation.models import ModerationItem

MAX_RECIPIENTS = 200


def _with_perm(codename: str):
    User = get_user_model()
    return User.objects.filter(Q(is_superuser=True) | Q(user_permissions__codename=codename,
                                                        user_permissions__content_type__app_label="moderation")
                               | Q(groups__permissions__codename=codename,
                                   groups__permissions__content_type__app_label="moderation")).distinct()


def tier_people(item: ModerationItem):
    """The people who review this item at its current tier (not the lower tiers: they had their turn)."""
    User = get_user_model()
    Tier = ModerationItem.Tier
    if item.tier == Tier.LEGAL:
        return _with_perm("legal_review").exclude(is_superuser=True) or _with_perm("legal_review")
    if item.institution_id:
        if item.tier == Tier.ROOM:
            ids = Enrollment.objects.filter(course_id=item.course_id, is_active=True,
                                            role__in=[Role.TEACHER, Role.TA]).values("user_id")
        elif item.tier == Tier.OWNER:
            ids = Membership.objects.filter(institution_id=item.institution_id, is_active=True,
                                            role=Role.STAFF).values("user_id")
        else:
            district = Institution.objects.filter(pk=item.institution_id).values("district_id")
            ids = DistrictRole.objects.filter(district_id__in=district).values("user_id")
        return User.objects.filter(pk__in=ids)
    from streaming.models import Channel, ChannelRole

    if item.tier == Tier.ROOM:
        return User.objects.filter(pk__in=ChannelRole.objects.filter(
            channel_id=item.channel_id, role=ChannelRole.Kind.MODERATOR).values("user_id"))
    if item.tier == Tier.OWNER:
        return User.objects.filter(pk__in=Channel.objects.filter(pk=item.channel_id).values("owner_id"))
    return _with_perm("platform_trust_safety").exclude(is_superuser=True) or _with_perm("platform_trust_safety")


def tier_notify(item_id: int) -> int:
    item = ModerationItem.objects.filter(pk=item_id).first()
    if item is None or item.status == ModerationItem.Status.DECIDED:
        return 0
    people = list(tier_people(item).filter(is_active=True).exclude(email="")
                  .values_list("email", flat=True)[:MAX_RECIPIENTS])
    link = f"{settings.AULA_PUBLIC_URL}/moderation/queue/?item={item.pk}"
    subject = f"Moderation: an item needs review at the {item.get_tier_display().lower()} tier"
    body = (f"Item #{item.pk} ({item.get_source_display()}, {item.get_category_display()}) was escalated to you "
            f"because it was not decided in time.\n\nReview it: {link}\n")
    messages = [(subject, body, settings.DEFAULT_FROM_EMAIL, [email]) for email in people]
    return send_mass_mail(messages, fail_silently=False) if messages else 0
