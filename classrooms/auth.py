"""Sign-in by email or username (case-insensitive), on Django's ModelBackend rules, throttled per account
and per client address; password sign-in refused where the person's districts have turned local passwords off
(they sign in through the district's identity provider: classrooms/sso.py)."""

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Q

from classrooms.models import District, DistrictRole, Enrollment, Institution, Membership, User

SSO_REQUIRED = ("Your district signs you in through its identity provider, not with an Aula password. "
                "Use your school account below.")


def password_sign_in_allowed(user: User) -> bool:
    """False when every district the person belongs to (through an active membership, an active enrollment or
    a district role) has turned local passwords off. Superusers are exempt, and so is anyone with no district at all
    (Aula staff, creators, viewers)."""
    if user.is_superuser:
        return True
    flags = set(District.objects.filter(
        Q(pk__in=Institution.objects.filter(
            Q(pk__in=Membership.objects.filter(user=user, is_active=True).values("institution_id"))
            | Q(pk__in=Enrollment.objects.filter(user=user, is_active=True).values("institution_id"))
        ).values("district_id"))
        | Q(pk__in=DistrictRole.objects.filter(user=user).values("district_id"))
    ).values_list("local_passwords", flat=True))
    return not flags or True in flags


class EmailOrUsernameBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None or password is None:
            return None
        user = User.objects.filter(Q(email__iexact=username) | Q(username__iexact=username)).first()
        if user is None:
            User().set_password(password)  # same work as a real check: no user-enumeration by timing
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            if not password_sign_in_allowed(user):
                if request is not None:
                    request._aula_sso_required = True  # the form says why (only after a correct password)
                return None
            return user
        return None

    def get_user(self, user_id):
        """The signed-in user of every request and socket: one plain statement (the ORM's `get()` was a
        visible share of a 2,000-socket join storm). Same rule as ModelBackend: inactive users are refused."""
        try:
            pk = int(user_id)
        except (TypeError, ValueError):
            return None
        user = next(iter(User.objects.raw("SELECT * FROM classrooms_user WHERE id = %s", [pk])), None)
        return user if user is not None and self.user_can_authenticate(user) else None

    def get_users(self, user_ids) -> dict:
        """get_user for many at once ({given id: user}; unknown or inactive ones left out): the sockets of a
        join storm are authenticated in batches (config/realtime/middleware.py, users_from_sessions)."""
        pks = {}
        for user_id in user_ids:
            try:
                pks[int(user_id)] = user_id
            except (TypeError, ValueError):
                continue
        users = User.objects.raw("SELECT * FROM classrooms_user WHERE id = ANY(%s)", [list(pks)]) if pks else []
        return {pks[u.pk]: u for u in users if self.user_can_authenticate(u)}


# --- sign-in throttling --------------------------------------------------------------------------------

def _throttle_keys(request, username: str) -> list[tuple[str, int]]:
    """(cache key, limit) per account and per client address. An existing account is counted by its id
    (its e-mail and its username are one account); an unknown name by a hash, never the name itself."""
    username = username.strip()
    pk = User.objects.filter(Q(email__iexact=username) | Q(username__iexact=username)).values_list(
        "pk", flat=True).first() if username else None
    account = f"u{pk}" if pk is not None else "h" + hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    address = request.META.get("REMOTE_ADDR", "-") if request is not None else "-"
    return [(f"login-fail:acct:{account}", settings.AULA_LOGIN_FAILURES_PER_ACCOUNT),
            (f"login-fail:ip:{address}", settings.AULA_LOGIN_FAILURES_PER_IP)]


def count_failure(key: str) -> int:
    """`add` then `incr` are each atomic in Redis: concurrent failures are all counted."""
    cache.add(key, 0, settings.AULA_LOGIN_WINDOW_SECONDS)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, settings.AULA_LOGIN_WINDOW_SECONDS)
        return 1


class ThrottledFormMixin:
    """For Django's AuthenticationForm and the admin's: refuse without checking the password while the
    account or the address is over its limit, and count each failure."""

    throttled = False
    sso_required = False

    def clean(self):
        keys = _throttle_keys(self.request, self.data.get("username", "") or "")
        # Every attempt is counted before the password is checked, so concurrent guesses cannot all slip in
        # under the limit; a success then takes its count back.
        counts = [count_failure(key) for key, _ in keys]
        if any(count > limit for count, (_, limit) in zip(counts, keys, strict=True)):
            self.throttled = True
            raise ValidationError("Too many sign-in attempts. Wait a few minutes and try again.", code="throttled")
        try:
            data = super().clean()
        except ValidationError:
            if getattr(self.request, "_aula_sso_required", False):
                self.sso_required = True
                raise ValidationError(SSO_REQUIRED, code="sso_required") from None
            raise
        cache.delete(keys[0][0])  # the account starts afresh
        try:
            cache.decr(keys[1][0])  # the address (a whole school behind one NAT) only loses this attempt
        except ValueError:
            pass
        return data


class ThrottledAuthenticationForm(ThrottledFormMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledFormMixin, AdminAuthenticationForm):
    pass


class ThrottledLoginView(LoginView):
    """The sign-in page. A throttled attempt answers 429 with Retry-After and says why. Django's login()
    gives the session a new key, so a session id planted before sign-in is worthless after it."""

    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        """The district's "Sign in with …" buttons (?district=<slug>) and the school-account box, when the
        single sign-on routes are installed."""
        from django.urls import NoReverseMatch, reverse

        context = super().get_context_data(**kwargs)
        try:
            context["sso_start_url"] = reverse("sso:start")
        except NoReverseMatch:
            return context
        from classrooms import sso

        slug = self.request.GET.get("district", "")
        providers = sso.providers_for(slug) if slug and "@" not in slug else []
        context["sso_providers"] = [(p, reverse("sso:begin", args=[p.district.slug, p.slug])) for p in providers]
        context["sso_login"] = slug
        return context

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
            response["Retry-After"] = str(settings.AULA_LOGIN_WINDOW_SECONDS)
        return response
