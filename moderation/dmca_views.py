"""DMCA pages: the designated agent, the notice form (public), the case page and the counter-notice form.

Forms only shape the input (lengths); which statutory elements are missing is decided by moderation.dmca, so a
refused notice lists exactly what the statute requires and the refusal is audited in one place.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from moderation import dmca
from moderation import dmca_selectors as selectors
from moderation.models import DmcaCase

TIMELINE_LABELS = {
    "notice_received": "Notice received",
    "material_disabled": "Material disabled",
    "strike_recorded": "Strike recorded",
    "account_terminated": "Account terminated (repeat infringer)",
    "uploader_notified": "Uploader notified by email",
    "uploader_notified_no_address": "Uploader could not be emailed (no address)",
    "counter_notice_rejected": "Counter-notice refused (incomplete)",
    "counter_notice_received": "Counter-notice received",
    "restore_scheduled": "Restoration scheduled",
    "counter_notice_forwarded": "Counter-notice forwarded to the claimant",
    "counter_notice_forwarded_no_address": "Counter-notice could not be forwarded (no address)",
    "court_action_reported": "Claimant's court action reported: no restoration",
    "material_restored": "Material restored",
    "strike_removed": "Strike removed",
}


def _text(max_length: int, *, long: bool = False) -> forms.CharField:
    return forms.CharField(required=False, max_length=max_length,
                           widget=forms.Textarea(attrs={"rows": 3}) if long else None)


class NoticeForm(forms.Form):
    # Every field optional here: the service names each missing statutory element itself.
    copyrighted_work = _text(2000, long=True)
    material_url = _text(500)
    description = _text(2000, long=True)
    complainant_name = _text(200)
    complainant_address = _text(500, long=True)
    complainant_phone = _text(50)
    complainant_email = _text(254)
    good_faith = forms.BooleanField(required=False)
    accurate_under_penalty = forms.BooleanField(required=False)
    signature = _text(200)


class CounterForm(forms.Form):
    material_identification = _text(2000, long=True)
    material_location = _text(500)
    name = _text(200)
    address = _text(500, long=True)
    phone = _text(50)
    mistake_under_penalty = forms.BooleanField(required=False)
    consents_to_jurisdiction = forms.BooleanField(required=False)
    accepts_service = forms.BooleanField(required=False)
    signature = _text(200)


def _agent() -> dict:
    return {"name": settings.AULA_DMCA_AGENT_NAME, "email": settings.AULA_DMCA_AGENT_EMAIL,
            "address": settings.AULA_DMCA_AGENT_ADDRESS, "phone": settings.AULA_DMCA_AGENT_PHONE}


def _notice_allowed(request) -> bool:
    """AULA_DMCA_NOTICES_PER_HOUR submissions per client address (counted atomically in Redis)."""
    key = f"dmca-notice:ip:{request.META.get('REMOTE_ADDR', '-')}"
    cache.add(key, 0, 3600)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, 3600)
        count = 1
    return count <= settings.AULA_DMCA_NOTICES_PER_HOUR


@require_GET
def agent_page(request):
    return render(request, "moderation/dmca/agent.html", {
        "agent": _agent(),
        "notice_elements": dmca.NOTICE_ELEMENTS.values(),
        "counter_elements": dmca.COUNTER_ELEMENTS.values(),
        "my_cases": selectors.cases_of_uploader(request.user)[:50],
    })


@require_http_methods(["GET", "POST"])
def notice_form(request):
    form, missing, status = NoticeForm(request.POST or None), [], 200
    if request.method == "POST":
        if not _notice_allowed(request):
            messages.error(request, "Too many notices from your address. Please wait an hour, or email the "
                                    "designated agent.")
            status = 429
        elif form.is_valid():
            try:
                case = dmca.notice_receive(data=dmca.NoticeInput(**form.cleaned_data))
            except dmca.Incomplete as exc:
                missing, status = [label for _, label in exc.missing], 400
            else:
                messages.success(request, f"Your notice was received (reference DMCA-{case.pk}). Access to the "
                                          f"material has been disabled and its uploader has been told.")
                return redirect("moderation:dmca-agent")
        else:
            status = 400
    return render(request, "moderation/dmca/notice_form.html",
                  {"form": form, "missing": missing, "agent": _agent()}, status=status)


def _case_or_404(request, case_id: int) -> DmcaCase:
    case = selectors.case_for(request.user, case_id)
    if case is None:
        raise Http404("No such case.")
    return case


@require_GET
def case_page(request, case_id: int):
    case = _case_or_404(request, case_id)
    staff = selectors.is_dmca_staff(request.user)
    timeline = [(entry, TIMELINE_LABELS.get(entry.action, entry.action)) for entry in selectors.case_timeline(case)]
    return render(request, "moderation/dmca/case.html", {
        "case": case,
        "staff": staff,
        "can_manage": selectors.can_manage_cases(request.user),
        "can_counter": selectors.can_counter_notice(request.user, case),
        # The uploader sees what the notice says (as emailed); contact details of claimants only staff.
        "notices": list(case.notices.all()),
        "counter": getattr(case, "counter_notice", None),
        "timeline": timeline,
        "restore_at": selectors.restore_countdown(case),
        "now": timezone.now(),
        "agent_tz": settings.AULA_DMCA_TIMEZONE,
        "location": dmca.MATERIALS[case.material_type].location(case.material_id),
    })


@login_required
@require_http_methods(["GET", "POST"])
def counter_form(request, case_id: int):
    case = _case_or_404(request, case_id)
    if not selectors.is_uploader(request.user, case):
        raise PermissionDenied("Only the uploader can send a counter-notice.")
    if case.status != DmcaCase.Status.DISABLED:
        messages.info(request, "This case already has a counter-notice.")
        return redirect("moderation:dmca-case", case_id=case.pk)
    location = request.build_absolute_uri(dmca.MATERIALS[case.material_type].location(case.material_id))
    initial = {"material_location": location, "material_identification": f"{case.get_material_type_display()} "
               f"\"{case.material_title}\""}
    form, missing, status = CounterForm(request.POST or None, initial=initial), [], 200
    if request.method == "POST":
        if form.is_valid():
            try:
                dmca.counter_notice_submit(case_id=case.pk, user=request.user,
                                           data=dmca.CounterInput(**form.cleaned_data))
            except dmca.Incomplete as exc:
                missing, status = [label for _, label in exc.missing], 400
            except dmca.Conflict as exc:
                messages.info(request, str(exc))
                return redirect("moderation:dmca-case", case_id=case.pk)
            else:
                messages.success(request, "Your counter-notice was received and forwarded to the claimant.")
                return redirect("moderation:dmca-case", case_id=case.pk)
        else:
            status = 400
    return render(request, "moderation/dmca/counter_form.html",
                  {"form": form, "missing": missing, "case": case, "agent": _agent()}, status=status)


@login_required
@require_POST
def court_action(request, case_id: int):
    case = _case_or_404(request, case_id)
    if not selectors.can_manage_cases(request.user):
        raise PermissionDenied("Only platform staff record court actions.")
    try:
        dmca.court_action_report(case_id=case.pk, actor=request.user, note=request.POST.get("note", ""))
    except dmca.Conflict as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Court action recorded: the material will not be restored.")
    return redirect("moderation:dmca-case", case_id=case.pk)
