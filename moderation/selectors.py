"""Moderation reads: the policy that applies to a room, who reviews what (tiers), the queue a person sees.

Tiers (ModerationItem.Tier): 1 the room's teachers and TAs, or the channel's moderators; 2 the school's staff
or the channel's owner; 3 the district's administrators (trust & safety for its schools), or platform trust &
safety for streams (permission moderation.platform_trust_safety); 4 legal (permission moderation.legal_review,
within the schools the person may see). A person reviews an item when their tier for its room is at least the
item's tier, so an item escalated past a teacher leaves the teacher's queue. Everything else answers 404:
a school's queue does not exist for anyone outside it.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.models import Q, QuerySet

from classrooms.models import DistrictRole, Enrollment, Institution, Membership, Role
from classrooms.selectors import institution_ids_for
from moderation import realtime
from moderation.models import ModerationItem, ModerationPolicy, Sanction, UserReport

_policies: dict[tuple, tuple[float, ModerationPolicy]] = {}


def _merge(base: dict, override: dict) -> dict:
    merged = {cat: dict(levels) for cat, levels in base.items()}
    for cat, levels in (override or {}).items():
        merged.setdefault(cat, {}).update({k: v for k, v in levels.items() if v is not None})
    return merged


def room_scopes(*, institution_id: int | None, course_id: int | None, channel_id: int | None) -> Q:
    """The policies or lists that apply to a room: the platform's, its school's (or channel's), its course's."""
    scope = Q(institution__isnull=True, course__isnull=True, channel__isnull=True)
    if institution_id:
        scope |= Q(institution_id=institution_id, course__isnull=True)
    if course_id:
        scope |= Q(course_id=course_id)
    if channel_id:
        scope |= Q(channel_id=channel_id)
    return scope


def policy_for(*, institution_id: int | None = None, course_id: int | None = None,
               channel_id: int | None = None, fresh: bool = False) -> ModerationPolicy:
    """The effective policy of a room (unsaved): platform defaults, then the platform policy, then the
    school's or channel's, then the course's; thresholds merge per category and level, the most specific
    fail mode and classifier switch win. Cached per process for AULA_MODERATION_CACHE_SECONDS."""
    key = (institution_id, course_id, channel_id)
    now = time.monotonic()
    cached = _policies.get(key)
    if cached is not None and cached[0] > now and not fresh:
        return cached[1]
    scope = room_scopes(institution_id=institution_id, course_id=course_id, channel_id=channel_id)
    rows = sorted(ModerationPolicy.objects.filter(scope),
                  key=lambda p: (p.course_id is not None, p.institution_id is not None or p.channel_id is not None))
    effective = ModerationPolicy(institution_id=institution_id, course_id=course_id, channel_id=channel_id,
                                 thresholds=_merge(settings.AULA_MODERATION_THRESHOLDS, {}))
    for row in rows:
        effective.thresholds = _merge(effective.thresholds, row.thresholds)
        effective.fail_mode, effective.classifier_enabled = row.fail_mode, row.classifier_enabled
    _policies[key] = (now + settings.AULA_MODERATION_CACHE_SECONDS, effective)
    return effective


def forget_policies() -> None:
    _policies.clear()


# --- who reviews what ----------------------------------------------------------------------------------------

def _has(user, perm: str) -> bool:
    return user.has_perm(f"moderation.{perm}")


def reviewer_scope(user) -> Q | None:
    """The items a person may see and act on, as a filter; None when none at all."""
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Q()
    q = Q(pk__in=[])
    taught = Enrollment.objects.filter(user=user, is_active=True, role__in=[Role.TEACHER, Role.TA]).values("course_id")
    q |= Q(course_id__in=taught, tier__lte=ModerationItem.Tier.ROOM)
    staff = Membership.objects.filter(user=user, is_active=True, role=Role.STAFF).values("institution_id")
    q |= Q(institution_id__in=staff, tier__lte=ModerationItem.Tier.OWNER)
    districts = DistrictRole.objects.filter(user=user).values("district_id")
    q |= Q(institution_id__in=Institution.objects.filter(district_id__in=districts).values("id"),
           tier__lte=ModerationItem.Tier.TRUST_SAFETY)
    from streaming.models import Channel, ChannelRole

    q |= Q(channel_id__in=ChannelRole.objects.filter(user=user, role=ChannelRole.Kind.MODERATOR).values("channel_id"),
           tier__lte=ModerationItem.Tier.ROOM)
    q |= Q(channel_id__in=Channel.objects.filter(owner=user).values("id"), tier__lte=ModerationItem.Tier.OWNER)
    if _has(user, "platform_trust_safety"):
        q |= Q(channel__isnull=False, tier__lte=ModerationItem.Tier.TRUST_SAFETY)
    if _has(user, "legal_review"):
        ids = institution_ids_for(user)
        q |= Q(channel__isnull=False) | (Q() if ids is None else Q(institution_id__in=ids))
    return q


def items_for(user) -> QuerySet[ModerationItem]:
    scope = reviewer_scope(user)
    if scope is None:
        return ModerationItem.objects.none()
    return ModerationItem.objects.filter(scope)


def item_for(user, item_id: int) -> ModerationItem | None:
    """The item if this person may review it (else None: the page answers 404)."""
    return items_for(user).filter(pk=item_id).select_related("author", "assigned_to", "decided_by").first()


def can_review(user, item: ModerationItem) -> bool:
    return items_for(user).filter(pk=item.pk).exists()


def is_reviewer(user) -> bool:
    """Has a queue at all (some room, school, channel or tier)."""
    scope = reviewer_scope(user)
    if scope is None:
        return False
    if user.is_superuser or _has(user, "legal_review") or _has(user, "platform_trust_safety"):
        return True
    from streaming.models import Channel, ChannelRole

    return (Enrollment.objects.filter(user=user, is_active=True, role__in=[Role.TEACHER, Role.TA]).exists()
            or Membership.objects.filter(user=user, is_active=True, role=Role.STAFF).exists()
            or DistrictRole.objects.filter(user=user).exists()
            or ChannelRole.objects.filter(user=user, role=ChannelRole.Kind.MODERATOR).exists()
            or Channel.objects.filter(owner=user).exists())


def open_queue(user) -> QuerySet[ModerationItem]:
    return items_for(user).exclude(status=ModerationItem.Status.DECIDED).order_by("-priority", "created_at", "id")


def queue_counts(user) -> dict:
    from django.db.models import Count

    rows = open_queue(user).order_by().values("status").annotate(n=Count("id"))
    counts = {r["status"]: r["n"] for r in rows}
    return {"open": counts.get(ModerationItem.Status.OPEN, 0), "claimed": counts.get(ModerationItem.Status.CLAIMED, 0),
            "total": sum(counts.values())}


def reporter_accuracy(user_id: int) -> float:
    """Share of a person's decided reports that were upheld, with a prior (two of four) so a first report
    counts as average, not as perfect or worthless."""
    decided = UserReport.objects.filter(reporter_id=user_id).exclude(outcome=UserReport.Outcome.PENDING)
    upheld = decided.filter(outcome=UserReport.Outcome.UPHELD).count()
    return (upheld + 2) / (decided.count() + 4)


def active_sanctions(user_id: int, *, institution_id: int | None = None, course_id: int | None = None,
                     channel_id: int | None = None, now=None) -> QuerySet[Sanction]:
    """Timeouts and bans in force for a person in this room's scope (warnings are not restrictions)."""
    from django.utils import timezone

    now = now or timezone.now()
    live = Sanction.objects.filter(user_id=user_id, revoked_at__isnull=True, kind__in=["timeout", "ban"]).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    where = Q(pk__in=[])
    if institution_id:
        where |= Q(scope=Sanction.Scope.INSTITUTION, institution_id=institution_id)
    if course_id:
        where |= Q(scope=Sanction.Scope.ROOM, course_id=course_id)
    if channel_id:
        where |= Q(channel_id=channel_id)
    return live.filter(where)


def queue_groups_for(user) -> list[str]:
    """The queue groups whose signals a person needs, derived from the same data as
    selectors.reviewer_scope (taught courses, staff schools, districts, moderated and owned channels,
    platform permissions). Empty when they review nothing. The platform group carries every item's signal,
    so a superuser (who reviews everything) joins it alone."""
    if not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser:
        return [realtime.queue_platform()]
    from streaming.models import Channel, ChannelRole

    groups: list[str] = []
    taught = Enrollment.objects.filter(user=user, is_active=True, role__in=[Role.TEACHER, Role.TA])
    groups += [realtime.queue_course(k) for k in sorted(set(taught.values_list("course_id", flat=True)))]
    staff = Membership.objects.filter(user=user, is_active=True, role=Role.STAFF)
    groups += [realtime.queue_school(i) for i in sorted(set(staff.values_list("institution_id", flat=True)))]
    districts = DistrictRole.objects.filter(user=user).values_list("district_id", flat=True)
    groups += [realtime.queue_district(d) for d in sorted(set(districts))]
    channels = set(ChannelRole.objects.filter(user=user, role=ChannelRole.Kind.MODERATOR)
                   .values_list("channel_id", flat=True))
    channels |= set(Channel.objects.filter(owner=user).values_list("id", flat=True))
    groups += [realtime.queue_channel(c) for c in sorted(channels)]
    if user.has_perm("moderation.platform_trust_safety"):
        groups.append(realtime.queue_streams())
    if user.has_perm("moderation.legal_review"):
        groups.append(realtime.queue_legal())
    return groups
