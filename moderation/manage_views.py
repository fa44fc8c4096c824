"""Moderation management pages: pattern lists (with CSV import/export and "test this text"), policies per scope,
appeals and item history for reviewers, the audit trail (filter, CSV export, chain check, transparency
summary), and the author's own notices and appeals.

Every write goes through policy_services, pattern_io or services. Anything outside a person's scope answers
404, never 403, so another school's list, policy or item cannot be told apart from one that does not exist.
User text is only ever rendered by the templates' autoescape.
"""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from classrooms.selectors import staff_institution_ids
from compliance import audit as compliance_audit
from config.exports import csv_stream_response
from moderation import audit, pattern_io, patterns, pipeline, policy_services, selectors, services
from moderation.forms import (
    AppealDecideForm,
    AppealForm,
    AuditFilterForm,
    CsvImportForm,
    PatternListForm,
    PatternRuleForm,
    PolicyForm,
    ReasonForm,
    TransparencyForm,
    TryTextForm,
)
from moderation.models import (
    Appeal,
    AuditEntry,
    AuditLedger,
    ModerationItem,
    ModerationPolicy,
    PatternList,
    Sanction,
    Source,
)
from moderation.policy_services import ScopeRef

AUDIT_PAGE_SIZE = 50


def _errors(exc: Exception) -> str:
    return "; ".join(getattr(exc, "messages", None) or [str(exc)])


def _form_errors(form, exc: ValidationError) -> None:
    """A service's ValidationError onto a form: by field where it names one the form has."""
    if hasattr(exc, "error_dict"):
        for name, errs in exc.error_dict.items():
            form.add_error(name if name in form.fields else None, errs)
    else:
        form.add_error(None, exc)


# --- home --------------------------------------------------------------------------------------------------

@login_required
@require_GET
def home(request):
    reach = policy_services.reach_of(request.user)
    reviewer = selectors.is_reviewer(request.user)
    ledgers = visible_ledgers(request.user)
    if not (reach.anything or reviewer or ledgers is None or ledgers):
        raise Http404("Nothing to manage")
    open_appeals = Appeal.objects.filter(status=Appeal.Status.OPEN,
                                         item__in=selectors.items_for(request.user)).count() if reviewer else 0
    return render(request, "moderation/manage/home.html", {
        "can_lists": reach.anything, "reviewer": reviewer, "can_audit": ledgers is None or bool(ledgers),
        "open_appeals": open_appeals})


# --- pattern lists -----------------------------------------------------------------------------------------

def _list_or_404(user, list_id: int) -> PatternList:
    plist = policy_services.lists_for(user).select_related("institution", "course", "channel").filter(
        pk=list_id).first()
    if plist is None:
        raise Http404("No such list")
    return plist


def _scope_label(obj) -> str:
    if obj.course_id:
        return f"Course {obj.course.code}"
    if obj.institution_id:
        return f"School {obj.institution.name}"
    if obj.channel_id:
        return f"Channel {obj.channel.title}"
    return "Platform"


@login_required
@require_http_methods(["GET", "POST"])
def lists(request):
    reach = policy_services.reach_of(request.user)
    if not reach.anything:
        raise Http404("No lists to manage")
    scopes = policy_services.manageable_scopes(request.user)
    form = PatternListForm(request.POST or None, scopes=scopes, prefix="new")
    if request.method == "POST" and form.is_valid():
        scope = policy_services.scope_parse(form.cleaned_data["scope"])
        try:
            if scope is None:
                raise PermissionDenied
            plist = policy_services.pattern_list_create(
                actor=request.user, scope=scope, name=form.cleaned_data["name"],
                action=form.cleaned_data["action"], is_active=form.cleaned_data["is_active"])
        except PermissionDenied:
            raise Http404("No such scope") from None
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"List “{plist.name}” created: add its rules below.")
            return redirect("moderation:manage-list", list_id=plist.pk)
    rows = (policy_services.lists_for(request.user).select_related("institution", "course", "channel")
            .annotate(rule_count=Count("rules")).order_by("institution_id", "course_id", "channel_id", "name", "id"))
    return render(request, "moderation/manage/lists.html", {
        "lists": [(pl, _scope_label(pl)) for pl in rows], "form": form, "scopes": scopes})


def _scope_context(scope: ScopeRef):
    source = Source.STREAM_CHAT if scope.channel_id else Source.CLASS_CHAT
    return pipeline.Context(source=source, institution_id=scope.institution_id, course_id=scope.course_id,
                            channel_id=scope.channel_id)


def try_text(text: str, scope: ScopeRef, plist: PatternList | None = None) -> dict:
    """The "test this text" results: one list alone (when given), every active list of the scope (read fresh),
    and what the pipeline would decide there with the effective policy."""
    result: dict = {"text": text, "scope": scope}
    if plist is not None:
        compiled = patterns.compile_list(plist, list(plist.rules.order_by("id")))
        result["list"] = patterns.try_text(text, [compiled])
    lists_ = patterns.load_lists(institution_id=scope.institution_id, course_id=scope.course_id,
                                 channel_id=scope.channel_id, fresh=True)  # screen() below reads these too
    result["room"] = patterns.try_text(text, lists_)
    policy = policy_services.effective_policy(scope)
    result["verdict"] = pipeline.screen(text, _scope_context(scope), policy=policy)
    result["policy"] = policy
    return result


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def list_detail(request, list_id: int):
    plist = _list_or_404(request.user, list_id)
    scope = policy_services.scope_of(plist)
    op = request.POST.get("op") if request.method == "POST" else None
    edit_form = PatternListForm(request.POST if op == "update" else None, prefix="list",
                                initial={"name": plist.name, "action": plist.action, "is_active": plist.is_active})
    rule_form = PatternRuleForm(request.POST if op == "add_rule" else None, prefix="rule")
    import_form = CsvImportForm(request.POST if op == "import" else None, request.FILES if op == "import" else None,
                                prefix="csv")
    try_form = TryTextForm(request.POST if op == "try" else None, prefix="try")
    tried, import_report = None, None
    try:
        if op == "update" and edit_form.is_valid():
            policy_services.pattern_list_update(actor=request.user, list_id=plist.pk, **edit_form.cleaned_data)
            messages.success(request, "List saved.")
            return redirect("moderation:manage-list", list_id=plist.pk)
        if op == "delete":
            policy_services.pattern_list_delete(actor=request.user, list_id=plist.pk)
            messages.success(request, f"List “{plist.name}” deleted.")
            return redirect("moderation:manage-lists")
        if op == "add_rule" and rule_form.is_valid():
            policy_services.pattern_rule_add(actor=request.user, list_id=plist.pk, **rule_form.cleaned_data)
            messages.success(request, "Rule added.")
            return redirect("moderation:manage-list", list_id=plist.pk)
        if op == "remove_rule":
            rule = plist.rules.filter(pk=request.POST.get("rule_id") or 0).first()
            if rule is None:
                raise Http404("No such rule")
            policy_services.pattern_rule_remove(actor=request.user, rule_id=rule.pk)
            messages.success(request, "Rule removed.")
            return redirect("moderation:manage-list", list_id=plist.pk)
        if op == "import" and import_form.is_valid():
            upload = import_form.cleaned_data["file"]
            if upload.size > pattern_io.MAX_BYTES:
                raise ValidationError(f"The file is larger than {pattern_io.MAX_BYTES // 1024} KB: split it.")
            import_report = pattern_io.import_csv(actor=request.user, plist=plist, data=upload.read(),
                                                  filename=upload.name or "")
            plist = _list_or_404(request.user, list_id)
        if op == "try" and try_form.is_valid():
            tried = try_text(try_form.cleaned_data["text"], scope, plist)
    except ValidationError as exc:
        form = {"update": edit_form, "add_rule": rule_form, "import": import_form}.get(op)
        if form is None:
            messages.error(request, _errors(exc))
        else:
            _form_errors(form, exc)
    except PermissionDenied:
        raise Http404("No such list") from None
    return render(request, "moderation/manage/list_detail.html", {
        "plist": plist, "scope_label": _scope_label(plist), "rules": list(plist.rules.order_by("kind", "pattern")),
        "edit_form": edit_form, "rule_form": rule_form, "import_form": import_form, "try_form": try_form,
        "tried": tried, "import_report": import_report, "max_rows": pattern_io.MAX_ROWS})


@login_required
@require_GET
def list_export(request, list_id: int):
    return pattern_io.export_response(_list_or_404(request.user, list_id))


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def try_scope(request):
    """"Test this text" for a whole room scope: every list that applies there and the pipeline's verdict."""
    scopes = policy_services.manageable_scopes(request.user)
    if not scopes:
        raise Http404("Nothing to test")
    key = request.POST.get("scope") or request.GET.get("scope") or scopes[0].key
    scope = next((s for s in scopes if s.key == key), None) or policy_services.scope_parse(key)
    if scope is None or not policy_services.can_manage(request.user, scope):
        raise Http404("No such scope")
    form = TryTextForm(request.POST or None, prefix="try")
    tried = try_text(form.cleaned_data["text"], scope) if request.method == "POST" and form.is_valid() else None
    return render(request, "moderation/manage/try.html", {"scopes": scopes, "scope": scope, "form": form,
                                                          "tried": tried})


# --- policies ----------------------------------------------------------------------------------------------

@login_required
@require_GET
def policies(request):
    scopes = policy_services.manageable_scopes(request.user)
    if not scopes:
        raise Http404("No policies to manage")
    own = {policy_services.scope_of(p).key
           for p in ModerationPolicy.objects.only("institution_id", "course_id", "channel_id")}
    return render(request, "moderation/manage/policies.html",
                  {"rows": [(s, s.key in own) for s in scopes]})


def _scope_or_404(user, key: str) -> ScopeRef:
    scope = policy_services.scope_parse(key)
    if scope is None or not policy_services.can_manage(user, scope):
        raise Http404("No such scope")
    return scope


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def policy_edit(request, key: str):
    scope = _scope_or_404(request.user, key)
    inherited = policy_services.inherited_policy(scope)
    own = policy_services.own_policy(scope)
    op = request.POST.get("op") if request.method == "POST" else None
    form = PolicyForm(request.POST if op == "save" else None, inherited=inherited,
                      initial=PolicyForm.initial_for(own, inherited))
    try:
        if op == "save" and form.is_valid():
            policy_services.policy_save(actor=request.user, scope=scope, thresholds=form.thresholds(),
                                        fail_mode=form.cleaned_data["fail_mode"],
                                        classifier_enabled=form.cleaned_data["classifier_enabled"])
            messages.success(request, "Policy saved: it applies within a few seconds.")
            return redirect("moderation:manage-policy", key=scope.key)
        if op == "reset":
            policy_services.policy_reset(actor=request.user, scope=scope)
            messages.success(request, "This scope now inherits everything.")
            return redirect("moderation:manage-policy", key=scope.key)
    except ValidationError as exc:
        _form_errors(form, exc)
    except PermissionDenied:
        raise Http404("No such scope") from None
    effective = policy_services.effective_policy(scope)
    table = [(label, [(lvl, effective.thresholds.get(cat, {}).get(lvl)) for lvl in policy_services.LEVELS])
             for cat, label, _cells in form.rows]
    return render(request, "moderation/manage/policy_edit.html", {
        "scope": scope, "form": form, "own": own, "effective": effective, "effective_rows": table,
        "levels": policy_services.LEVELS})


# --- appeals and items (reviewers) -------------------------------------------------------------------------

@compliance_audit.reads("moderation.Appeal", "moderation.ModerationItem")
@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def appeals(request):
    if not selectors.is_reviewer(request.user):
        raise Http404("No queue")
    scoped = Appeal.objects.filter(item__in=selectors.items_for(request.user)).select_related(
        "item", "appellant", "item__decided_by", "decided_by", "sanction")
    if request.method == "POST":
        appeal = scoped.filter(pk=request.POST.get("appeal_id") or 0).first()
        if appeal is None:
            raise Http404("No such appeal")
        form = AppealDecideForm(request.POST, prefix=f"a{appeal.pk}")
        if appeal.item.decided_by_id == request.user.pk:
            messages.error(request, "You made the original decision: a different moderator decides this appeal.")
        elif form.is_valid():
            try:
                services.appeal_decide(appeal_id=appeal.pk, actor=request.user,
                                       overturn=form.cleaned_data["outcome"] == "overturn",
                                       note=form.cleaned_data["note"])
            except (PermissionDenied, ValidationError, services.Stale) as exc:
                messages.error(request, _errors(exc))
            else:
                messages.success(request, f"Appeal {appeal.pk} decided.")
        else:
            messages.error(request, "Choose an outcome and give the reason.")
        return redirect("moderation:manage-appeals")
    open_appeals = [(a, AppealDecideForm(prefix=f"a{a.pk}"), a.item.decided_by_id == request.user.pk)
                    for a in scoped.filter(status=Appeal.Status.OPEN).order_by("created_at", "id")]
    decided = list(scoped.exclude(status=Appeal.Status.OPEN).order_by("-decided_at", "-id")[:20])
    shown = [a for a, _, _ in open_appeals] + decided
    compliance_audit.record_request_access(request, shown + [a.item for a in shown], purpose="moderation appeal")
    return render(request, "moderation/manage/appeals.html", {"open_appeals": open_appeals, "decided": decided})


def item_history(item: ModerationItem):
    return (AuditEntry.objects.filter(ledger=audit.ledger_for(institution_id=item.institution_id,
                                                              channel_id=item.channel_id),
                                      target_type=item.source, target_id=item.object_id)
            .select_related("actor").order_by("index"))


@compliance_audit.reads("moderation.ModerationItem", "moderation.Sanction", "moderation.Appeal")
@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def item_detail(request, item_id: int):
    item = selectors.item_for(request.user, item_id)
    if item is None:
        raise Http404("No such item")
    compliance_audit.record_request_access(request, [item, *item.sanctions.all(), *item.appeals.all()],
                                           purpose="moderation review")
    op = request.POST.get("op") if request.method == "POST" else None
    reverse_form = ReasonForm(request.POST if op == "reverse" else None, prefix="reverse")
    lift_form = ReasonForm(request.POST if op == "lift" else None, prefix="lift")
    if op:
        try:
            if op == "reverse" and reverse_form.is_valid():
                services.decision_reverse(item_id=item.pk, actor=request.user,
                                          reason=reverse_form.cleaned_data["reason"])
                messages.success(request, "Decision reversed.")
                return redirect("moderation:manage-item", item_id=item.pk)
            if op == "lift" and lift_form.is_valid():
                sanction = item.sanctions.filter(pk=request.POST.get("sanction_id") or 0).first()
                if sanction is None:
                    raise Http404("No such sanction")
                services.sanction_revoke(sanction_id=sanction.pk, actor=request.user,
                                         reason=lift_form.cleaned_data["reason"])
                messages.success(request, "Sanction lifted.")
                return redirect("moderation:manage-item", item_id=item.pk)
        except (PermissionDenied, ValidationError, services.Stale) as exc:
            messages.error(request, _errors(exc))
    now = timezone.now()
    sanctions = [(s, sanction_state(s, now)) for s in item.sanctions.select_related("issued_by", "revoked_by")]
    return render(request, "moderation/manage/item.html", {
        "item": item, "history": item_history(item), "sanctions": sanctions,
        "appeals": item.appeals.select_related("appellant", "decided_by").order_by("created_at"),
        "reverse_form": reverse_form, "lift_form": lift_form,
        "can_reverse": item.status == ModerationItem.Status.DECIDED})


def sanction_state(sanction: Sanction, now) -> str:
    if sanction.revoked_at:
        return "lifted"
    if sanction.kind == Sanction.Kind.WARN:
        return "on record"
    if sanction.expires_at and sanction.expires_at <= now:
        return "expired"
    return "active"


# --- audit -------------------------------------------------------------------------------------------------

def visible_ledgers(user) -> list[str] | None:
    """The audit ledgers a person may read: None for all (superusers); school staff and district admins their
    schools' ("i<id>"), channel owners their channels' ("c<id>"); nobody else any."""
    if not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser:
        return None
    from streaming.models import Channel

    schools = staff_institution_ids(user) or frozenset()
    ledgers = [audit.ledger_for(institution_id=i) for i in sorted(schools)]
    ledgers += [audit.ledger_for(channel_id=c) for c in Channel.objects.filter(owner=user)
                .order_by("id").values_list("id", flat=True)]
    return ledgers


def _ledgers_or_404(user) -> list[str] | None:
    ledgers = visible_ledgers(user)
    if ledgers is not None and not ledgers:
        raise Http404("No audit to see")
    return ledgers


def _ledger_choices(ledgers: list[str] | None) -> list[str]:
    if ledgers is not None:
        return ledgers
    return list(AuditLedger.objects.order_by("key").values_list("key", flat=True)[:1000])


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _audit_entries(request):
    ledgers = _ledgers_or_404(request.user)
    form = AuditFilterForm(request.GET or None, ledgers=_ledger_choices(ledgers))
    qs = AuditEntry.objects.all() if ledgers is None else AuditEntry.objects.filter(ledger__in=ledgers)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        if data["ledger"]:
            qs = qs.filter(ledger=data["ledger"])
        if data["start"]:
            qs = qs.filter(at__gte=_day_start(data["start"]))
        if data["end"]:
            qs = qs.filter(at__lt=_day_start(data["end"] + dt.timedelta(days=1)))
        if data["action"]:
            qs = qs.filter(Q(action=data["action"]) | Q(action__startswith=data["action"].rstrip(".") + "."))
        if data["stage"]:
            qs = qs.filter(stage=data["stage"])
    elif form.is_bound:
        qs = qs.none()
    return form, qs, ledgers


@login_required
@never_cache
@require_GET
def audit_list(request):
    form, qs, _ledgers = _audit_entries(request)
    page = Paginator(qs.select_related("actor").order_by("-at", "-id"), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "moderation/manage/audit.html", {"form": form, "page": page,
                                                            "query": query.urlencode()})


@login_required
@require_GET
def audit_export(request):
    form, qs, _ledgers = _audit_entries(request)
    rows = qs.order_by("ledger", "index").iterator(chunk_size=2000)
    return csv_stream_response(f"moderation-audit-{timezone.now():%Y%m%d-%H%M}.csv", audit.export_csv(rows))


@login_required
@never_cache
@require_GET
def audit_verify(request):
    """The hash chain of every ledger the person may see, checked now."""
    ledgers = _ledger_choices(_ledgers_or_404(request.user))
    counts = dict(AuditLedger.objects.filter(key__in=ledgers).values_list("key", "count"))
    results = []
    for key in ledgers:
        ok, first_bad = audit.verify(key)
        results.append({"ledger": key, "ok": ok, "first_bad": first_bad, "count": counts.get(key, 0)})
    if request.GET.get("format") == "json":
        return JsonResponse({"ledgers": results})
    return render(request, "moderation/manage/audit_verify.html", {"results": results})


@login_required
@require_GET
def transparency(request):
    """Counts by action, category and stage for a month (default: this one) or a custom range, as a page or
    JSON (?format=json), over the ledgers the person may see (one of them with ?ledger=)."""
    ledgers = _ledgers_or_404(request.user)
    params = request.GET.copy()
    fmt = params.pop("format", [""])[-1]
    ledger = params.pop("ledger", [""])[-1]
    form = TransparencyForm(params or None)
    today = timezone.localdate()
    start, end = today.replace(day=1), (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    if form.is_bound:
        if not form.is_valid():
            if fmt == "json":
                return JsonResponse({"errors": form.errors}, status=400)
        elif "range" in form.cleaned_data:
            start, end = form.cleaned_data["range"]
    entries = AuditEntry.objects.all() if ledgers is None else AuditEntry.objects.filter(ledger__in=ledgers)
    if ledger:
        if ledgers is not None and ledger not in ledgers:
            raise Http404("No such ledger")
        entries = entries.filter(ledger=ledger)
    summary = audit.transparency_summary(entries, _day_start(start), _day_start(end))
    summary["ledger"] = ledger or "all"
    if fmt == "json":
        return JsonResponse(summary)
    json_query = request.GET.copy()
    json_query["format"] = "json"
    return render(request, "moderation/manage/transparency.html", {
        "form": form, "summary": summary, "start": start, "end": end - dt.timedelta(days=1),
        "json_url": f"{reverse('moderation:manage-transparency')}?{json_query.urlencode()}",
        "ledgers": _ledger_choices(ledgers), "ledger": ledger})


# --- the author's notices and appeals ----------------------------------------------------------------------

@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def notices(request):
    """Decisions against the person's own content and their sanctions, with the reasons; appeals."""
    user = request.user
    decided = (ModerationItem.objects.filter(author=user, status=ModerationItem.Status.DECIDED)
               .exclude(decision__in=[ModerationItem.Decision.APPROVE, ModerationItem.Decision.CONTEXT])
               .order_by("-decided_at", "-id"))
    if request.method == "POST":
        form = AppealForm(request.POST)
        item = decided.filter(pk=request.POST.get("item_id") or 0).first()
        if item is None:
            raise Http404("No such decision")
        if form.is_valid():
            try:
                services.appeal_file(item_id=item.pk, appellant=user, statement=form.cleaned_data["statement"])
            except (PermissionDenied, ValidationError) as exc:
                messages.error(request, _errors(exc))
            else:
                messages.success(request, "Your appeal was sent: a different moderator will look at it.")
        else:
            messages.error(request, "Say why the decision should be looked at again (at most 2,000 characters).")
        return redirect("moderation:notices")
    items = list(decided[:100])
    appeals_by_item = {a.item_id: a for a in Appeal.objects.filter(appellant=user, item__in=[i.pk for i in items])}
    reversed_ids = _reversed(items)
    now = timezone.now()
    sanctions = [(s, sanction_state(s, now)) for s in Sanction.objects.filter(user=user).order_by("-created_at")[:100]]
    rows = [{"item": i, "appeal": appeals_by_item.get(i.pk), "reversed": i.pk in reversed_ids,
             "form": AppealForm(auto_id=f"id_appeal{i.pk}_%s")} for i in items]
    return render(request, "moderation/notices.html", {"rows": rows, "sanctions": sanctions})


def _reversed(items: list[ModerationItem]) -> set[int]:
    """Items whose decision was later reversed (the audit trail is where that is kept)."""
    if not items:
        return set()
    entries = AuditEntry.objects.filter(action="reverse", target_type__in={i.source for i in items},
                                        target_id__in={i.object_id for i in items}).values_list("data", flat=True)
    return {d.get("item") for d in entries if isinstance(d, dict)}
