"""LTI 1.3 endpoints: Aula's key set, the OIDC login initiation, the launch, the hand-off into a first-party
window, course linking and the deep-linking picker.

An LMS shows a tool in an iframe, where browsers withhold Aula's (SameSite=Lax) session cookie. So nothing
inside the frame relies on it (the one cookie a launch needs is pylti1p3's OIDC state cookie, SameSite=None;
a browser blocking all third-party cookies is refused with a clear page — LTI Platform Storage is not
supported): a resource-link launch answers with a page that opens Aula in its own window
through a single-use hand-off token; the deep-linking picker (which must answer inside the frame) is bound to
the validated launch by its launch id, which stands in for both the session and the CSRF token.
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from pylti1p3.deep_link import DeepLink
from pylti1p3.exception import LtiException, OIDCException

from classrooms import lti, lti_selectors, lti_services, lti_targets, selectors
from classrooms.models import LtiContext, User

log = logging.getLogger("aula.lti")

HANDOFF_SECONDS = 600
PICKER_SECONDS = 3600
FRAMED_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self' "
              "https: http:; frame-ancestors *; base-uri 'none'; object-src 'none'")


def _framed(response):
    """Pages an LMS shows inside its iframe: embeddable by any LMS, forms may post back to the LMS."""
    response["Content-Security-Policy"] = FRAMED_CSP
    return response


def _refused(request, message: str, status: int = 403):
    return _framed(render(request, "classrooms/lti_refused.html", {"message": message}, status=status))


@require_GET
def jwks(request):
    response = JsonResponse(lti_selectors.jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response


@csrf_exempt
@xframe_options_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def login_initiation(request):
    """Step 1 of the launch (OIDC third-party-initiated login): back to the platform with state and nonce."""
    conf = lti.ToolConf()
    try:
        return lti.oidc_login(request, conf).redirect(settings.AULA_PUBLIC_URL + reverse("lti-launch"))
    except (OIDCException, LtiException) as exc:
        log.warning("lti login refused", extra={"reason": str(exc)[:120]})
        return _refused(request, "This LMS is not registered with Aula, or the request was incomplete.", 400)


@csrf_exempt
@xframe_options_exempt
@never_cache
@require_POST
def launch(request):
    """Step 2: the platform posts the signed id_token. Validated (lti.MessageLaunch), then landed."""
    conf = lti.ToolConf()
    try:
        # The constructor already reads pylti1p3's state cookie: a browser that withheld it (third-party cookies
        # blocked in the LMS frame) is refused here, not answered with a 500.
        message = lti.MessageLaunch(request, conf)
        claims = message.get_launch_data()
    except LtiException as exc:
        log.warning("lti launch refused", extra={"reason": str(exc)[:160]})
        return _refused(request, "This launch could not be verified. Please launch Aula again from your course.")
    try:
        try:
            result = lti_services.launch_accept(platform=message.platform(), claims=claims)
        except (IntegrityError, ValidationError):
            # Two first launches of one person at once (a double click, or a launch racing the roster sync):
            # the other made the account and its identity; this one now finds them.
            result = lti_services.launch_accept(platform=message.platform(), claims=claims)
    except lti_services.LaunchRefused as exc:
        log.info("lti launch not served", extra={"reason": exc.code})
        return _refused(request, exc.message)
    except (IntegrityError, ValidationError) as exc:
        log.warning("lti launch not served", extra={"reason": type(exc).__name__})
        return _refused(request, "Aula could not set up your account from this launch; ask your school's Aula "
                                 "administrator.")
    # One refresh per course and period, however many students launch at the bell (300 launches queued 34).
    if result.roster_due and cache.add(f"lti:roster-queued:{result.context.pk}", 1,
                                       max(settings.AULA_LTI_ROSTER_REFRESH_SECONDS, 60)):
        from classrooms.tasks import lti_roster_sync

        lti_roster_sync.apply_async(args=[result.context.pk], queue="bulk")
    if result.deep_linking:
        token = message.get_launch_id()
        cache.set(f"lti:picker:{token}", {"user": result.user.pk, "context": result.context.pk}, PICKER_SECONDS)
        return _picker(request, token, result.user, result.context)
    landing = result.landing or reverse("lti-context-link", args=[result.context.pk])
    handoff = secrets.token_urlsafe(32)
    cache.set(f"lti:handoff:{handoff}", {"user": result.user.pk, "next": landing}, HANDOFF_SECONDS)
    return _framed(render(request, "classrooms/lti_open.html", {
        "continue_url": reverse("lti-continue", args=[handoff]), "title": result.link.title if result.link else "",
        "new_window": result.link is not None}))


@never_cache
@require_GET
def handoff(request, token: str):
    """The first-party half of a launch: sign in (once per token) and go where the launch pointed."""
    data = cache.get(f"lti:handoff:{token}")
    if not data or not cache.delete(f"lti:handoff:{token}"):
        return _refused(request, "This link has expired or was already used. Launch Aula again from your course.",
                        410)
    user = User.objects.filter(pk=data["user"], is_active=True).first()
    if user is None:
        return _refused(request, "Your Aula account is closed.")
    login(request, user, backend="classrooms.auth.EmailOrUsernameBackend")
    target = data["next"]
    return redirect(target if target.startswith("/") and not target.startswith("//") else "/")


@login_required
@require_http_methods(["GET", "POST"])
def context_link(request, context_id: int):
    """A teacher says which of their Aula courses an LMS course is (first launch of an unlinked course)."""
    context = get_object_or_404(LtiContext.objects.select_related("platform", "course"), pk=context_id)
    if not lti_selectors.launched_as_teacher(request.user, context):
        raise Http404
    courses = lti_selectors.linkable_courses(request.user, context)
    if not courses.exists() and context.course_id is None:
        return _refused(request, "You teach no Aula course in this district to link this LMS course to.")
    if request.method == "POST" and request.POST.get("action") == "roster":
        if context.course is None or not selectors.can_teach(request.user, context.course):
            raise PermissionDenied
        from classrooms.tasks import lti_roster_sync

        lti_roster_sync.apply_async(args=[context.pk], queue="bulk")
        messages.success(request, "The roster is being refreshed from the LMS; reload in a moment.")
        return redirect(reverse("lti-context-link", args=[context.pk]))
    if request.method == "POST":
        chosen = request.POST.get("course", "")
        course = courses.filter(pk=int(chosen)).first() if chosen.isdigit() else None
        if course is None:
            return HttpResponseBadRequest("Choose one of your courses.")
        try:
            lti_services.context_link(context=context, course=course, actor=request.user)
        except (PermissionDenied, ValidationError) as exc:
            return _refused(request, " ".join(getattr(exc, "messages", [str(exc)])))
        from classrooms.tasks import lti_roster_sync

        lti_roster_sync.apply_async(args=[context.pk], queue="bulk")
        return redirect(reverse("lti-context-link", args=[context.pk]))
    return render(request, "classrooms/lti_link.html", {"context": context, "courses": courses})


def _picker(request, token: str, user: User, context: LtiContext, error: str = ""):
    courses = lti_selectors.linkable_courses(user, context) if context.course_id is None else []
    targets = lti_targets.for_course(context.course_id) if context.course_id else []
    return _framed(render(request, "classrooms/lti_picker.html", {
        "token": token, "context": context, "courses": courses, "targets": targets, "error": error,
        "person": user}, status=400 if error else 200))


@csrf_exempt  # bound to the validated launch by its unguessable launch id instead (module docstring)
@xframe_options_exempt
@never_cache
@require_POST
def deep_link(request):
    """The teacher's choice in the picker: link the course if asked, then answer the platform with the signed
    LtiDeepLinkingResponse (auto-posted to its return URL)."""
    token = request.POST.get("launch", "")
    bound = cache.get(f"lti:picker:{token}") if token.startswith("lti1p3-launch-") else None
    if not bound:
        return _refused(request, "This choice has expired. Open the Aula picker again from your course.", 410)
    user = User.objects.filter(pk=bound["user"], is_active=True).first()
    context = LtiContext.objects.select_related("platform", "course").filter(pk=bound["context"]).first()
    conf = lti.ToolConf()
    try:
        message = lti.MessageLaunch.from_cache(token, request, conf)
        settings_claim = message.get_launch_data().get(lti.DL_CLAIM) or {}
    except LtiException:
        message = None
    if user is None or context is None or message is None or not message.is_deep_link_launch():
        return _refused(request, "This choice has expired. Open the Aula picker again from your course.", 410)
    try:
        if request.POST.get("course"):
            chosen = request.POST["course"]
            course = lti_selectors.linkable_courses(user, context).filter(pk=int(chosen)).first() \
                if chosen.isdigit() else None
            if course is None:
                raise ValidationError("Choose one of your courses.")
            context = lti_services.context_link(context=context, course=course, actor=user)
            return _picker(request, token, user, context)
        picks = []
        for value in request.POST.getlist("item"):
            kind, _, pk = value.partition(":")
            if kind not in lti_targets.kinds() or not pk.isdigit():
                raise ValidationError("Unknown activity.")
            picks.append((kind, int(pk)))
        if picks and not settings_claim.get("accept_multiple", True):
            picks = picks[:1]
        items = lti_services.deep_link_place(context=context, actor=user, picks=picks)
    except (PermissionDenied, ValidationError) as exc:
        return _picker(request, token, user, context, error=" ".join(getattr(exc, "messages", [str(exc)])))
    registration = conf.find_registration_by_params(context.platform.issuer, context.platform.client_id)
    deployment = message.get_launch_data().get(lti.CLAIM + "deployment_id")
    jwt = DeepLink(registration, deployment, settings_claim).get_response_jwt([_Item(i) for i in items])
    cache.delete(f"lti:picker:{token}")
    return _framed(render(request, "classrooms/lti_return.html", {
        "return_url": settings_claim.get("deep_link_return_url", ""), "jwt": jwt, "count": len(items)}))


class _Item:
    """A content item as pylti1p3's DeepLink takes it (an object with to_dict())."""

    def __init__(self, data: dict):
        self.data = data

    def to_dict(self) -> dict:
        return self.data


@xframe_options_exempt
@never_cache
@require_GET
def dynamic_registration(request, token: str):
    """LTI Dynamic Registration 1.0: the LMS admin pasted a district's registration link; the LMS opens it with
    its configuration URL and a registration token. Aula registers itself and tells the LMS window to close."""
    config_url = request.GET.get("openid_configuration", "")
    if not config_url.startswith(("https://", "http://")):
        return _refused(request, "Open this link from your LMS's \"register a tool by URL\" screen.", 400)
    try:
        platform = lti_services.registration_complete(token=token, openid_configuration=config_url,
                                                      registration_token=request.GET.get("registration_token", ""))
    except lti_services.RegistrationFailed as exc:
        return _refused(request, str(exc), 400)
    return _framed(render(request, "classrooms/lti_registered.html", {"platform": platform}))


@require_GET
def tool_configuration(request):
    """What a district admin types into their LMS when registering Aula (also for dynamic-registration-less
    platforms): URLs, key set, message types and scopes."""
    base = settings.AULA_PUBLIC_URL
    return JsonResponse({
        "title": "Aula", "description": "Live classes and timed exams",
        "oidc_initiation_url": base + reverse("lti-login"), "target_link_uri": base + reverse("lti-launch"),
        "redirect_uris": [base + reverse("lti-launch")], "jwks_uri": base + reverse("lti-jwks"),
        "messages": [{"type": "LtiResourceLinkRequest"}, {"type": "LtiDeepLinkingRequest",
                                                            "target_link_uri": base + reverse("lti-launch")}],
        "scopes": list(lti.AGS_SCOPES) + [lti.NRPS_SCOPE],
        "claims": ["iss", "sub", "name", "given_name", "family_name", "email"],
    })
