"""`{% open_alerts_count as n %}`: the staff banner's figure (unresolved alerts this user may see)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def open_alerts_count(context) -> int:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        return 0
    from analytics.admin_health import room_scope
    from analytics.models import Alert

    return room_scope(request, Alert.objects.exclude(state=Alert.State.RESOLVED)).count()
