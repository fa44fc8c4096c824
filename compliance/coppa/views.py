"""The guardian page: a verified guardian sees each child's consent, revokes it, and asks the school to
delete the child's personal information."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from classrooms.models import Guardianship
from compliance.coppa import selectors, services
from compliance.models import ChildDataDeletion, ParentalConsent, PersonalInfoFeature


def _wards(user):
    return (Guardianship.objects.filter(guardian=user, verified_at__isnull=False)
            .select_related("student", "institution").order_by("student__first_name", "student_id"))


def _ward(user, student_id: int) -> Guardianship:
    link = _wards(user).filter(student_id=student_id).first()
    if link is None:
        raise Http404("No such child")  # someone else's child is indistinguishable from none
    return link


@login_required
@require_GET
def guardian_home(request):
    children = []
    for link in _wards(request.user):
        child = link.student
        children.append({
            "link": link,
            "child": child,
            "under_13": child.is_under_13,
            "features": [(label, selectors.can_collect_personal_info(child, value))
                         for value, label in PersonalInfoFeature.choices],
            "consents": selectors.consents_for(child),
            "deletion": ChildDataDeletion.objects.filter(student=child, completed_at__isnull=True).first(),
        })
    return render(request, "compliance/guardian.html", {"children": children})


@login_required
@require_POST
def consent_revoke(request, consent_id: int):
    consent = ParentalConsent.objects.filter(pk=consent_id, student__guardians__guardian=request.user,
                                             student__guardians__verified_at__isnull=False).first()
    if consent is None:
        raise Http404("No such consent")
    services.consent_revoke(consent=consent, actor=request.user)
    messages.success(request, "Consent withdrawn. The features it allowed are now off for your child.")
    return redirect("guardian-home")


@login_required
@require_POST
def deletion_ask(request, student_id: int):
    link = _ward(request.user, student_id)
    if request.POST.get("confirm") != "delete":
        messages.error(request, "Tick the box to confirm that you want your child's information deleted.")
        return redirect("guardian-home")
    services.deletion_request(student=link.student, institution=link.institution, actor=request.user,
                              origin=ChildDataDeletion.Origin.GUARDIAN)
    messages.success(request, f"Your request was sent to {link.institution.name}. The school carries it out and "
                              "the account is then deleted with everything in it.")
    return redirect("guardian-home")
