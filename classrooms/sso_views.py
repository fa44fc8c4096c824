"""Single sign-on pages: find the district's provider, send the browser to it, take its answer back, sign in.

Thin: the protocol and the mapping are in classrooms/sso.py, the writes in classrooms/sso_services.py.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth import login
from django.core.cache import cache
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from classrooms import sso, sso_services
from classrooms.models import IdentityProvider, User

BACKEND = "classrooms.auth.EmailOrUsernameBackend"  # the session's backend (get_user) after an SSO sign-in
SESSION_OIDC = "sso_oidc_pending"  # {state: {provider, nonce, verifier, next}}
SESSION_SAML = "sso_saml_pending"  # [relay token, ...] started in this browser
MAX_PENDING = 5


def _safe_next(request, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()},
                                                 require_https=request.is_secure()):
        return value
    return reverse(settings.LOGIN_REDIRECT_URL)


def _provider_or_404(district: str, provider: str) -> IdentityProvider:
    p = sso.provider_for(district, provider)
    if p is None:
        raise Http404("No such sign-in")
    return p


def refused(request, provider: IdentityProvider | None, error: sso.Refused) -> HttpResponse:
    sso.refuse_log(provider, error.reason, error.detail)
    return render(request, "registration/sso_refused.html",
                  {"reason": error.reason, "message": error.message, "provider": provider}, status=403)


def _sign_in(request, provider: IdentityProvider, asserted: sso.Asserted, next_url: str) -> HttpResponse:
    try:
        user = sso.person_for(provider, asserted)
        sso_services.sign_in_record(provider=provider, subject=asserted.subject, user=user)
    except sso.Refused as error:
        return refused(request, provider, error)
    login(request, user, backend=BACKEND)  # a new session key: nothing planted before sign-in survives
    return HttpResponseRedirect(_safe_next(request, next_url))


@require_GET
@never_cache
def start(request):
    """From the sign-in page's "school account" box: a district slug or an email address → its provider(s).
    A page, not a redirect: the site's CSP (`form-action 'self'`) also governs where a form submission is
    redirected, so the way to the IdP starts from this page (a link, or the automatic refresh when there is
    exactly one provider)."""
    login_value = request.GET.get("login", "")
    providers = sso.providers_for(login_value)
    next_url = _safe_next(request, request.GET.get("next"))
    links = [(p, f"{reverse('sso:begin', args=[p.district.slug, p.slug])}?next={quote(next_url, safe='/')}")
             for p in providers]
    return render(request, "registration/sso_choose.html",
                  {"providers": links, "login_value": login_value, "auto": links[0][1] if len(links) == 1 else ""},
                  status=200 if providers else 404)


@require_GET
@never_cache
def begin(request, district: str, provider: str):
    p = _provider_or_404(district, provider)
    next_url = _safe_next(request, request.GET.get("next"))
    try:
        if p.kind == IdentityProvider.Kind.OIDC:
            url, state, pending = sso.oidc_begin(p, _oidc_redirect_uri(request, p))
            pending["next"] = next_url
            flows = dict(list(request.session.get(SESSION_OIDC, {}).items())[-(MAX_PENDING - 1):])
            flows[state] = pending
            request.session[SESSION_OIDC] = flows
        else:
            url, relay, pending = sso.saml_begin(p, request, _saml_urls(request, p))
            pending["next"] = next_url
            cache.set(f"sso:saml:relay:{relay}", pending, sso.PENDING_TTL)
            request.session[SESSION_SAML] = [*request.session.get(SESSION_SAML, [])[-(MAX_PENDING - 1):], relay]
    except sso.Refused as error:
        return refused(request, p, error)
    return HttpResponseRedirect(url)


def _oidc_redirect_uri(request, p: IdentityProvider) -> str:
    return request.build_absolute_uri(reverse("sso:oidc_callback", args=[p.district.slug, p.slug]))


def _saml_urls(request, p: IdentityProvider) -> sso.SamlUrls:
    args = [p.district.slug, p.slug]
    return sso.SamlUrls(metadata=request.build_absolute_uri(reverse("sso:saml_metadata", args=args)),
                        acs=request.build_absolute_uri(reverse("sso:saml_acs", args=args)))


@require_GET
@never_cache
def oidc_callback(request, district: str, provider: str):
    p = _provider_or_404(district, provider)
    flows = request.session.get(SESSION_OIDC, {})
    pending = flows.pop(request.GET.get("state", ""), None)  # single use, bound to this browser's session
    request.session[SESSION_OIDC] = flows
    if pending is None or pending.get("provider") != p.pk:
        return refused(request, p, sso.Refused("expired_request", "unknown or used state"))
    if request.GET.get("error") or not request.GET.get("code"):
        return refused(request, p, sso.Refused("provider_error", request.GET.get("error", "no code")[:60]))
    try:
        asserted = sso.oidc_finish(p, pending, _oidc_redirect_uri(request, p), request.GET["code"])
    except sso.Refused as error:
        return refused(request, p, error)
    return _sign_in(request, p, asserted, pending.get("next", ""))


@csrf_exempt  # the IdP's form posts here cross-site; the signed, audience-bound, single-use assertion is the check
@require_POST
@never_cache
def saml_acs(request, district: str, provider: str):
    """Validate the IdP's Response, then hand the result to `saml_complete` through a same-site navigation: the
    cross-site POST does not carry our SameSite=Lax session cookie, the next request does, and only the browser
    that started the sign-in may finish it."""
    p = _provider_or_404(district, provider)
    relay = request.POST.get("RelayState", "")
    pending = cache.get(f"sso:saml:relay:{relay}") if relay else None
    if pending is not None:
        cache.delete(f"sso:saml:relay:{relay}")  # one answer per AuthnRequest
    if pending is None or pending.get("provider") != p.pk:
        return refused(request, p, sso.Refused("expired_request", "unknown or used RelayState"))
    try:
        asserted = sso.saml_finish(p, request, _saml_urls(request, p), pending)
        user = sso.person_for(p, asserted)
    except sso.Refused as error:
        return refused(request, p, error)
    token = secrets.token_urlsafe(32)
    cache.set(f"sso:saml:done:{token}", {"provider": p.pk, "relay": relay, "user": user.pk,
                                        "subject": asserted.subject, "next": pending.get("next", "")}, 120)
    url = f"{reverse('sso:saml_complete')}?t={token}"
    return render(request, "registration/sso_continue.html", {"url": url})


@require_GET
@never_cache
def saml_complete(request):
    token = request.GET.get("t", "")
    done = cache.get(f"sso:saml:done:{token}") if token else None
    if done is not None:
        cache.delete(f"sso:saml:done:{token}")
    started_here = request.session.get(SESSION_SAML, [])
    provider = IdentityProvider.objects.select_related("district").defer(
        "oidc_client_secret", "saml_sp_private_key").filter(pk=done["provider"] if done else None, enabled=True).first()
    if done is None or provider is None or done["relay"] not in started_here:
        return refused(request, provider, sso.Refused("expired_request", "not started in this browser"))
    request.session[SESSION_SAML] = [r for r in started_here if r != done["relay"]]
    user = User.objects.filter(pk=done["user"]).first()
    if user is None or not user.is_active:
        return refused(request, provider, sso.Refused("disabled"))
    try:
        sso_services.sign_in_record(provider=provider, subject=done["subject"], user=user)
    except sso.Refused as error:
        return refused(request, provider, error)
    login(request, user, backend=BACKEND)
    return HttpResponseRedirect(_safe_next(request, done["next"]))


@require_GET
def saml_metadata(request, district: str, provider: str):
    p = _provider_or_404(district, provider)
    if p.kind != IdentityProvider.Kind.SAML:
        raise Http404("Not a SAML provider")
    try:
        xml = sso.saml_metadata(p, _saml_urls(request, p))
    except sso.Refused as error:  # the SP key cannot be decrypted
        return refused(request, p, error)
    return HttpResponse(xml, content_type="application/samlmetadata+xml")
