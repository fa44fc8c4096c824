"""The live review queue page: one paged queue of every source a person reviews, its actions as plain POST
forms (usable without JavaScript), and one row's fragment that the live page re-reads on each queue signal.

Everything outside a person's review scope is a 404, never a 403 (moderation.selectors.items_for), so another
school's item cannot be told apart from one that does not exist. Every write is one call into
moderation.services, the same functions the queue socket (moderation/consumers.py) calls.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from compliance import audit
from moderation import pipeline, selectors, services
from moderation.models import Category, ModerationItem, Sanction, Source

Status = ModerationItem.Status
Decision = ModerationItem.Decision


# --- reading the queue ---------------------------------------------------------------------------------------

def queue_filters(params) -> dict:
    """The page's filter (source, category, tier) from query or form parameters; unknown values are ignored."""
    found = {}
    if params.get("source") in Source.values:
        found["source"] = params["source"]
    if params.get("category") in Category.values:
        found["category"] = params["category"]
    tier = params.get("tier", "")
    if tier.isdigit() and int(tier) in ModerationItem.Tier.values:
        found["tier"] = int(tier)
    return found


def in_filter(item: ModerationItem, filters: dict) -> bool:
    return all(getattr(item, field) == value for field, value in filters.items())


def queue_page(user, filters: dict, page: int, size: int | None = None) -> dict:
    """One page of the open queue and its counts in two queries whatever the queue's length: one aggregate
    (open / claimed / total of the whole queue, and how many match the filter, for paging) and one for the
    page's rows with their author and reviewer."""
    size = size or settings.AULA_MODERATION_PAGE_SIZE
    queue = selectors.open_queue(user)
    matching = Q(**filters) if filters else Q()
    counts = queue.order_by().aggregate(
        open=Count("id", filter=Q(status=Status.OPEN)), claimed=Count("id", filter=Q(status=Status.CLAIMED)),
        total=Count("id"), matching=Count("id", filter=matching))
    pages = max(1, math.ceil(counts["matching"] / size))
    page = min(max(1, page), pages)
    start = (page - 1) * size
    rows = list(queue.filter(**filters).select_related("author", "assigned_to")[start:start + size])
    return {"rows": rows, "page": page, "pages": pages, "size": size, "matching": counts.pop("matching"),
            "counts": counts, "has_previous": page > 1, "has_next": page < pages}


def _page_number(request) -> int:
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isdigit() and len(raw) < 9 else 1


def _reviewer_or_404(request) -> None:
    if not selectors.is_reviewer(request.user):
        raise Http404("No review queue.")
    request.moderation_reviewer = True  # the header's link needs no second look


def _row_context(item: ModerationItem, user) -> dict:
    scopes = [Sanction.Scope.ROOM, Sanction.Scope.INSTITUTION] if item.institution_id else \
        [Sanction.Scope.ROOM, Sanction.Scope.CHANNEL]
    return {
        "item": item,
        "mine": item.assigned_to_id == user.pk,
        "claimed_by_other": item.status == Status.CLAIMED and item.assigned_to_id not in (None, user.pk),
        "decisions": [(value, label) for value, label in Decision.choices
                      if value != Decision.CONTEXT or item.institution_id],
        "scopes": [(s, Sanction.Scope(s).label) for s in scopes],
        "scores": sorted(((k, v) for k, v in (item.scores or {}).items() if isinstance(v, int | float)),
                         key=lambda kv: -kv[1]),
        "matches": [m for m in (item.matches or []) if isinstance(m, dict)],
        "max_timeout": services.MAX_TIMEOUT_MINUTES,
        "now": timezone.now(),
    }


def render_row(request, item: ModerationItem, next_url: str = "") -> str:
    return render_to_string("moderation/_queue_row.html",
                            {**_row_context(item, request.user), "next": next_url}, request=request)


@audit.reads("moderation.ModerationItem")
@login_required
@never_cache
@require_GET
def queue(request):
    _reviewer_or_404(request)
    filters = queue_filters(request.GET)
    data = queue_page(request.user, filters, _page_number(request))
    # A class item holds what a student wrote: reviewing it is an access to their record (FERPA).
    audit.record_request_access(request, data["rows"], purpose="moderation review")
    health = pipeline.classifier_health()
    here = request.get_full_path()
    rows = [{**_row_context(item, request.user), "next": here} for item in data["rows"]]
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return render(request, "moderation/queue.html", {
        **data, "row_contexts": rows, "filters": filters, "filter_query": query, "health": health,
        "classifier_down": health.get("state") == "open", "next": here,
        "sources": Source.choices, "categories": Category.choices, "tiers": ModerationItem.Tier.choices,
        "ws_path": "/ws/moderation/queue/",
    })


def _wants_json(request) -> bool:
    return request.GET.get("format") == "json" or "application/json" in request.headers.get("Accept", "")


@audit.reads("moderation.ModerationItem")
@login_required
@never_cache
@require_GET
def queue_item(request, item_id: int):
    """One row for the live page: HTML, or JSON {id, version, status, in_filter, html, counts} (the counts let
    the page update its totals with the same request). A decided item answers with status "decided" and no
    row; an item outside the person's scope (or escalated past their tier) is a 404."""
    item = selectors.item_for(request.user, item_id)
    if item is None:
        raise Http404("No such item in your queue.")
    if item.status != Status.DECIDED:
        audit.record_request_access(request, [item], purpose="moderation review")
    next_url = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    if not _wants_json(request):
        return HttpResponse(render_row(request, item, next_url))
    open_ = item.status != Status.DECIDED
    return JsonResponse({
        "id": item.pk, "version": item.version, "status": item.status, "priority": item.priority,
        "created": item.created_at.isoformat(), "in_filter": open_ and in_filter(item, queue_filters(request.GET)),
        "html": render_row(request, item, next_url) if open_ else "",
        "counts": selectors.queue_counts(request.user),
    })


# --- actions -----------------------------------------------------------------------------------------------

def _int_or_none(raw) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not raw.lstrip("-").isdigit() or len(raw) > 9:
        raise ValidationError("Enter a whole number.")
    return int(raw)


def _act(request, item_id: int, action: str, call):
    """Run one service call for a queue action and answer as the caller wants: JSON for the live page (200,
    409 when the item changed meanwhile, 400 for a bad request, 404 outside scope), or a flash message and a
    redirect back to the queue for a plain form post."""
    wants_json = _wants_json(request)
    try:
        item = call()
    except services.Stale as exc:
        if wants_json:
            return JsonResponse({"error": "stale", "message": str(exc), "id": item_id}, status=409)
        messages.warning(request, f"Item {item_id}: {exc} The queue shows it as it is now.")
        return _back(request)
    except PermissionDenied as exc:
        if selectors.item_for(request.user, item_id) is None:
            raise Http404("No such item in your queue.") from None
        if wants_json:
            return JsonResponse({"error": "forbidden", "message": str(exc), "id": item_id}, status=403)
        messages.error(request, str(exc))
        return _back(request)
    except ValidationError as exc:
        message = "; ".join(exc.messages)
        if wants_json:
            return JsonResponse({"error": "invalid", "message": message, "id": item_id}, status=400)
        messages.error(request, f"Item {item_id}: {message}")
        return _back(request)
    if wants_json:
        return JsonResponse({"ok": True, "id": item_id, "version": item.version if item else None,
                             "status": item.status if item else None})
    labels = {"claim": "claimed", "release": "released", "escalate": "escalated", "assign": "assigned"}
    messages.success(request, f"Item {item_id} {labels.get(action) or 'decided: ' + action}.")
    return _back(request)


def _back(request):
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return redirect(target)
    return redirect(reverse("moderation:queue"))


def _version(request) -> int | None:
    return _int_or_none(request.POST.get("version"))


def _item_action(action: str):
    @login_required
    @require_POST
    def view(request, item_id: int):
        actor = request.user

        def call():
            version = _version(request)
            if action == "claim":
                return services.item_claim(item_id=item_id, actor=actor, version=version)
            if action == "release":
                return services.item_release(item_id=item_id, actor=actor, version=version)
            if action == "assign":
                return services.item_assign(item_id=item_id, actor=actor, version=version,
                                            assignee_email=request.POST.get("assignee", "")[:254])
            if action == "escalate":
                return escalate_checked(item_id=item_id, actor=actor, version=version,
                                        reason=request.POST.get("reason", "")[:200])
            decision = request.POST.get("decision", "")
            minutes = _int_or_none(request.POST.get("minutes")) if decision == Decision.TIMEOUT else None
            return services.item_decide(item_id=item_id, actor=actor, decision=decision, version=version,
                                        note=request.POST.get("note", "")[:500], minutes=minutes,
                                        scope=request.POST.get("scope") or None)

        label = request.POST.get("decision", "") if action == "decide" else action
        return _act(request, item_id, label, call)

    view.__name__ = view.__qualname__ = f"queue_{action}"
    return view


def escalate_checked(*, item_id: int, actor, version: int | None, reason: str) -> ModerationItem | None:
    item = services.escalate(item_id=item_id, actor=actor, reason=reason, version=version)
    if item is None:
        raise services.Stale("This item has already been decided.")
    return item


queue_claim = _item_action("claim")
queue_release = _item_action("release")
queue_assign = _item_action("assign")
queue_decide = _item_action("decide")
queue_escalate = _item_action("escalate")
