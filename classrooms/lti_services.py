"""LTI 1.3 writes: Aula's signing keys and their rotation, platform registration, accepting a launch (account,
course, role, placement), deep-link placements, roster reconciliation from NRPS and grade passback over AGS.

Every enrollment change goes through classrooms.services (the one write path, audited by auditlog); every
launch leaves an LtiLaunch row. Outbound calls use pylti1p3's service connector with a cached access token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from pylti1p3.assignments_grades import AssignmentsGradesService
from pylti1p3.exception import LtiServiceException

from classrooms import lti, lti_targets, selectors, services
from classrooms.models import (
    Course,
    Enrollment,
    ExternalIdentity,
    Institution,
    LtiContext,
    LtiLaunch,
    LtiPlatform,
    LtiRegistrationInvite,
    LtiResourceLink,
    LtiToolKey,
    Membership,
    Role,
    User,
)

log = logging.getLogger("aula.lti")

MEMBERSHIP_MEDIA = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
LINEITEM_MEDIA = "application/vnd.ims.lis.v2.lineitem+json"
LINEITEMS_MEDIA = "application/vnd.ims.lis.v2.lineitemcontainer+json"
SCORE_MEDIA = "application/vnd.ims.lis.v1.score+json"
MAX_MEMBER_PAGES = 500


class LaunchRefused(Exception):
    """A launch that was valid LTI but that Aula cannot serve; `message` is shown to the person."""

    def __init__(self, code: str, message: str):
        super().__init__(code)
        self.code, self.message = code, message


# --- keys ---------------------------------------------------------------------------------------------------

def _key_lock() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('aula.lti.keys'))")


def _key_create() -> LtiToolKey:
    private_pem, public_pem = lti.new_key_pair()
    jwk = lti.public_jwk(public_pem)
    return LtiToolKey.objects.create(kid=jwk["kid"], private_key=private_pem, public_jwk=jwk)


def signing_key() -> LtiToolKey:
    """The key Aula signs with: the newest published one that has been published for
    AULA_LTI_KEY_PUBLISH_SECONDS, else the one published longest (the first one is made on first use)."""
    now = timezone.now()
    live = LtiToolKey.objects.filter(Q(retire_at__isnull=True) | Q(retire_at__gt=now)).order_by("-created_at", "-id")
    ready = now - dt.timedelta(seconds=settings.AULA_LTI_KEY_PUBLISH_SECONDS)
    key = live.filter(created_at__lte=ready).first() or live.last()
    if key is not None:
        return key
    with transaction.atomic():
        _key_lock()
        key = LtiToolKey.objects.filter(retire_at__isnull=True).first()
        return key or _key_create()


def key_rotate(*, immediate: bool = False) -> LtiToolKey:
    """A new signing key. Scheduled: published now, signed with after AULA_LTI_KEY_PUBLISH_SECONDS (platforms
    cache key sets), while the previous ones sign until then and stay published AULA_LTI_KEY_OVERLAP_HOURS more
    (what they signed still verifies). `immediate` (a leaked key): the previous ones are unpublished at once."""
    lead = dt.timedelta(seconds=settings.AULA_LTI_KEY_PUBLISH_SECONDS)
    retire_at = timezone.now() if immediate else timezone.now() + lead + dt.timedelta(
        hours=settings.AULA_LTI_KEY_OVERLAP_HOURS)
    with transaction.atomic():
        _key_lock()
        for old in LtiToolKey.objects.filter(Q(retire_at__isnull=True) | Q(retire_at__gt=retire_at)):
            old.retire_at = retire_at
            old.save(update_fields=["retire_at"])
        key = _key_create()
    log.info("lti key rotated", extra={"kid": key.kid, "immediate": immediate})
    return key


def keys_rotate_due() -> dict:
    """Beat: rotate when the signing key is older than AULA_LTI_KEY_ROTATE_DAYS; delete keys past retirement
    (their private halves are of no further use)."""
    now = timezone.now()
    removed, _ = LtiToolKey.objects.filter(retire_at__lte=now).delete()
    current = LtiToolKey.objects.filter(retire_at__isnull=True).first()
    rotated = current is not None and current.created_at < now - dt.timedelta(days=settings.AULA_LTI_KEY_ROTATE_DAYS)
    if rotated:
        key_rotate()
    return {"rotated": rotated, "removed": removed}


# --- platforms ----------------------------------------------------------------------------------------------

def platform_save(*, platform: LtiPlatform) -> LtiPlatform:
    """Registration by staff (admin): endpoints must be https in production; deployment ids are strings."""
    urls = [platform.auth_login_url, platform.auth_token_url, platform.keyset_url]
    if settings.PRODUCTION and not all(u.startswith("https://") for u in urls):
        raise ValidationError("A platform's endpoints must use https.")
    if not isinstance(platform.deployment_ids, list):
        raise ValidationError({"deployment_ids": "A list of deployment ids."})
    platform.deployment_ids = [str(d).strip() for d in platform.deployment_ids if str(d).strip()]
    platform.full_clean()
    platform.save()
    return platform


# --- dynamic registration (LTI Dynamic Registration 1.0) ---------------------------------------------------

INVITE_DAYS = 7
TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def registration_invite_create(*, district_id: int, actor: User) -> tuple[LtiRegistrationInvite, str]:
    """A single-use registration link for one district; the secret is returned once and stored hashed."""
    token = secrets.token_urlsafe(32)
    invite = LtiRegistrationInvite.objects.create(
        district_id=district_id, token_hash=_token_hash(token), created_by=actor,
        expires_at=timezone.now() + dt.timedelta(days=INVITE_DAYS))
    return invite, token


def registration_invite_find(token: str) -> LtiRegistrationInvite | None:
    return LtiRegistrationInvite.objects.select_related("district").filter(
        token_hash=_token_hash(token), used_at__isnull=True, expires_at__gt=timezone.now()).first()


class RegistrationFailed(Exception):
    pass


def tool_client_metadata() -> dict:
    """What Aula asks the platform to register (Dynamic Registration 1.0 section 3.1)."""
    base = settings.AULA_PUBLIC_URL
    launch = base + "/lti/launch/"
    return {
        "application_type": "web", "response_types": ["id_token"], "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": base + "/lti/login/", "redirect_uris": [launch], "client_name": "Aula",
        "jwks_uri": base + "/lti/jwks.json", "token_endpoint_auth_method": "private_key_jwt",
        "scope": " ".join([*lti.AGS_SCOPES, lti.NRPS_SCOPE]),
        TOOL_CONFIGURATION: {
            "domain": base.split("://", 1)[-1].split("/", 1)[0], "target_link_uri": launch,
            "claims": ["iss", "sub", "name", "given_name", "family_name", "email"],
            "messages": [{"type": "LtiDeepLinkingRequest", "target_link_uri": launch, "label": "Aula"},
                         {"type": "LtiResourceLinkRequest", "target_link_uri": launch}],
        },
    }


def registration_complete(*, token: str, openid_configuration: str, registration_token: str) -> LtiPlatform:
    """Fetch the platform's configuration, register Aula with it, and record the registration for the invite's
    district. The configuration must come from the issuer it names (section 3.5.1); in production over https."""
    invite = registration_invite_find(token)
    if invite is None:
        raise RegistrationFailed("This registration link has expired or was already used.")
    if settings.PRODUCTION and not openid_configuration.startswith("https://"):
        raise RegistrationFailed("The LMS's configuration must be served over https.")
    http = lti.BoundedSession()
    try:
        response = http.get(openid_configuration)
        response.raise_for_status()
        config = response.json()
        issuer = str(config["issuer"])
        if not openid_configuration.startswith(issuer.rstrip("/") + "/"):
            raise RegistrationFailed("The LMS's configuration does not come from the issuer it names.")
        platform_config = config.get(PLATFORM_CONFIGURATION) or {}
        # Everything Aula will record is checked before registering with the LMS: a registration the LMS made
        # that Aula then cannot store would be an orphan on the LMS's side.
        endpoints = {"auth_login_url": str(config["authorization_endpoint"]),
                     "auth_token_url": str(config["token_endpoint"]), "keyset_url": str(config["jwks_uri"])}
        check_url = URLValidator(schemes=["https"] if settings.PRODUCTION else ["http", "https"])
        for url in endpoints.values():
            check_url(url)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if registration_token:
            headers["Authorization"] = f"Bearer {registration_token}"
        answer = http.post(config["registration_endpoint"], data=json.dumps(tool_client_metadata()), headers=headers)
        answer.raise_for_status()
        registered = answer.json()
        client_id = str(registered["client_id"])
        deployment = str((registered.get(TOOL_CONFIGURATION) or {}).get("deployment_id") or "")
    except RegistrationFailed:
        raise
    except (requests.RequestException, ValueError, KeyError, TypeError, ValidationError) as exc:
        log.warning("lti dynamic registration failed", extra={"reason": type(exc).__name__})
        raise RegistrationFailed("The LMS did not complete the registration; try again from the LMS.") from None
    with transaction.atomic():
        invite = LtiRegistrationInvite.objects.select_for_update().get(pk=invite.pk)
        if invite.used_at is not None:
            raise RegistrationFailed("This registration link was already used.")
        platform = LtiPlatform.objects.filter(issuer=issuer, client_id=client_id).first()
        if platform is not None and platform.district_id != invite.district_id:
            raise RegistrationFailed("This LMS client is registered for another district.")
        platform = platform or LtiPlatform(district_id=invite.district_id, issuer=issuer, client_id=client_id)
        platform.name = str(platform_config.get("product_family_code") or platform.name or issuer)[:200]
        for name, url in endpoints.items():
            setattr(platform, name, url)
        platform.deployment_ids = sorted({*map(str, platform.deployment_ids or []), *([deployment] if deployment
                                                                                      else [])})
        platform.is_active = True
        try:
            platform_save(platform=platform)
        except ValidationError as exc:
            raise RegistrationFailed("The LMS's registration could not be stored: " + " ".join(exc.messages)) \
                from None
        invite.used_at, invite.platform = timezone.now(), platform
        invite.save(update_fields=["used_at", "platform"])
    log.info("lti platform registered", extra={"platform": platform.pk, "district": platform.district_id})
    return platform


# --- people and courses ------------------------------------------------------------------------------------

def _district_people(district_id: int):
    return User.objects.filter(
        Q(pk__in=Membership.objects.filter(institution__district_id=district_id, is_active=True).values("user_id"))
        | Q(pk__in=Enrollment.objects.filter(institution__district_id=district_id, is_active=True)
            .values("user_id")))


@dataclass
class Person:
    """What a platform says about someone (launch claims or an NRPS member)."""

    sub: str
    email: str = ""
    given_name: str = ""
    family_name: str = ""
    name: str = ""
    sourced_id: str = ""

    @classmethod
    def from_claims(cls, claims: dict) -> Person:
        lis = claims.get(lti.LIS_CLAIM) or {}
        return cls(sub=str(claims.get("sub") or ""), email=str(claims.get("email") or ""),
                   given_name=str(claims.get("given_name") or ""), family_name=str(claims.get("family_name") or ""),
                   name=str(claims.get("name") or ""), sourced_id=str(lis.get("person_sourcedid") or ""))

    @classmethod
    def from_member(cls, member: dict) -> Person:
        return cls(sub=str(member.get("user_id") or ""), email=str(member.get("email") or ""),
                   given_name=str(member.get("given_name") or ""), family_name=str(member.get("family_name") or ""),
                   name=str(member.get("name") or ""), sourced_id=str(member.get("lis_person_sourcedid") or ""))


def person_account(*, platform: LtiPlatform, person: Person, provision_at: Institution | None,
                   role: str | None) -> User | None:
    """The Aula account of a platform's user: by the platform's subject, else by the SIS sourcedId the platform
    passes, else (only on a platform marked `trust_email`) by email among non-staff people this district already
    has; else (with a school to put them in) a new account, refused when the address belongs to any existing
    account. The match is remembered as an ExternalIdentity. None when nobody matches and none may be made."""
    from compliance.selectors import user_by_sourced_id

    if not person.sub:
        raise LaunchRefused("no_subject", "The LMS did not say who you are (no subject).")
    identity = ExternalIdentity.objects.select_related("user").filter(
        kind=ExternalIdentity.Kind.LTI, issuer=platform.issuer, subject=person.sub).first()
    if identity is not None:
        if identity.district_id != platform.district_id:
            raise LaunchRefused("other_district", "This LMS account belongs to another district in Aula.")
        identity.last_seen_at = timezone.now()
        identity.save(update_fields=["last_seen_at"])
        return identity.user
    user = user_by_sourced_id(platform.district_id, person.sourced_id) if person.sourced_id else None
    if user is None and person.email and platform.trust_email:
        # Only where the district vouches for the LMS's addresses, and never an account with admin access: an
        # email claim alone must not hand over a staff member's account.
        user = _district_people(platform.district_id).filter(
            email__iexact=person.email, is_staff=False, is_superuser=False).first()
    if user is None:
        if provision_at is None or role is None:
            return None
        email = User.objects.normalize_email(person.email).lower()
        if email and User.objects.filter(email__iexact=email).exists():
            # A roster sync (or a parallel launch) may have just made this very person: then it is theirs.
            made = ExternalIdentity.objects.select_related("user").filter(
                kind=ExternalIdentity.Kind.LTI, issuer=platform.issuer, subject=person.sub,
                district_id=platform.district_id).first()
            if made is not None:
                return made.user
            # An existing account has the address (another district's, staff, or email not trusted): never adopt
            # (or reveal) it; an administrator links the accounts.
            raise LaunchRefused("email_taken", "Your LMS email address is used by another Aula account; ask your "
                                               "school's Aula administrator to link your accounts.")
        handle = "lti-" + hashlib.sha256(f"{platform.pk}:{person.sub}".encode()).hexdigest()[:16]
        user = services.user_upsert(email=email or f"{handle}@lti.invalid", username=handle,
                                    first_name=person.given_name[:150] or person.name[:150],
                                    last_name=person.family_name[:150])
    ExternalIdentity.objects.get_or_create(
        kind=ExternalIdentity.Kind.LTI, issuer=platform.issuer, subject=person.sub,
        defaults={"district_id": platform.district_id, "user": user, "last_seen_at": timezone.now()})
    return user


def _enroll(user: User, course: Course, role: str) -> str:
    """Enrollment (and school membership) through the one write path; returns added/changed/unchanged."""
    before = Enrollment.objects.filter(course=course, user=user).values_list("role", "is_active").first()
    if not Membership.objects.filter(user=user, institution_id=course.institution_id, role=role,
                                     is_active=True).exists():
        services.membership_grant(user=user, institution=course.institution, role=role)
    services.enrollment_upsert(course=course, user=user, role=role)
    if before is None or not before[1]:
        return "added"
    return "changed" if before[0] != role else "unchanged"


def _context_upsert(platform: LtiPlatform, claims: dict) -> LtiContext | None:
    from compliance.selectors import course_by_sourced_id

    ctx = claims.get(lti.CLAIM + "context") or {}
    if not ctx.get("id"):
        return None
    nrps = claims.get(lti.NRPS_CLAIM) or {}
    ags = claims.get(lti.AGS_CLAIM) or {}
    values = {"title": str(ctx.get("title") or ctx.get("label") or "")[:255],
              "memberships_url": str(nrps.get("context_memberships_url") or "")[:500],
              "lineitems_url": str(ags.get("lineitems") or "")[:500]}
    with transaction.atomic():
        context, created = LtiContext.objects.select_for_update().get_or_create(
            platform=platform, context_id=str(ctx["id"])[:255], defaults=values)
        changed = {k: v for k, v in values.items() if v and getattr(context, k) != v}
        if context.course_id is None:
            # A course the SIS rostered and the LMS names by its sourcedId links itself.
            sourced = (claims.get(lti.LIS_CLAIM) or {}).get("course_section_sourcedid")
            course = course_by_sourced_id(platform.district_id, str(sourced)) if sourced else None
            if course is not None:
                changed.update(course=course, institution_id=course.institution_id)
        if changed and not created:
            for k, v in changed.items():
                setattr(context, k, v)
            context.save()
        elif created and changed.get("course"):
            context.course, context.institution_id = changed["course"], changed["institution_id"]
            context.save()
    return context


def _link_for(context: LtiContext, claims: dict) -> LtiResourceLink | None:
    rl = claims.get(lti.CLAIM + "resource_link") or {}
    link_id = str(rl.get("id") or "")[:255]
    if not link_id:
        return None
    link = LtiResourceLink.objects.filter(context=context, resource_link_id=link_id).first()
    custom = claims.get(lti.CLAIM + "custom") or {}
    placed = str(custom.get("aula_link") or "")
    if link is None and placed.isdigit():
        # The placement Aula made when the teacher deep-linked: claim it for this resource link, once, and only
        # in the LMS course it was made in (a copied course re-links, it does not reach across).
        with transaction.atomic():
            link = LtiResourceLink.objects.select_for_update().filter(pk=int(placed), context=context).first()
            if link is not None and link.resource_link_id and link.resource_link_id != link_id:
                link = None
            elif link is not None and not link.resource_link_id:
                link.resource_link_id = link_id
                link.save(update_fields=["resource_link_id"])
    if link is not None:
        ags = claims.get(lti.AGS_CLAIM) or {}
        if ags.get("lineitem") and link.lineitem_url != ags["lineitem"]:
            link.lineitem_url = str(ags["lineitem"])[:500]
            link.save(update_fields=["lineitem_url"])
    return link


@dataclass
class LaunchResult:
    user: User
    platform: LtiPlatform
    context: LtiContext | None
    role: str | None
    link: LtiResourceLink | None
    deep_linking: bool
    landing: str = ""          # where to send the person; empty: the course still needs linking
    roster_due: bool = False


def launch_accept(*, platform: LtiPlatform, claims: dict) -> LaunchResult:
    """Land a validated launch: the person's account, their enrollment in the linked course with the role the
    LMS gives them, the placement they launched. Raises LaunchRefused with a message for the person."""
    message_type = claims.get(lti.CLAIM + "message_type")
    role = lti.course_role(claims.get(lti.CLAIM + "roles") or [])
    if role is None:
        raise LaunchRefused("role", "Aula serves teachers and students; your LMS role has no place in Aula.")
    context = _context_upsert(platform, claims)
    if context is None:
        raise LaunchRefused("no_context", "Aula is launched from inside a course.")
    course = context.course
    person = Person.from_claims(claims)
    with transaction.atomic():
        user = person_account(platform=platform, person=person,
                              provision_at=course.institution if course else None, role=role)
        if user is None:
            if role == Role.STUDENT:
                raise LaunchRefused("not_linked", "Your teacher has not connected this course to Aula yet.")
            raise LaunchRefused("unknown_teacher", "Your LMS account is not matched to an Aula account; ask your "
                                                   "school's Aula administrator to add you.")
        if not user.is_active:
            raise LaunchRefused("inactive", "Your Aula account is closed.")
        if course is not None:
            _enroll(user, course, role)
        link = _link_for(context, claims) if message_type == "LtiResourceLinkRequest" else None
        LtiLaunch.objects.create(platform=platform, user=user, context=context, resource_link=link,
                                 message_type=str(message_type)[:64], role=role)
    result = LaunchResult(user=user, platform=platform, context=context, role=role, link=link,
                          deep_linking=message_type == "LtiDeepLinkingRequest")
    stale = context.roster_synced_at is None or context.roster_synced_at < timezone.now() - dt.timedelta(
        seconds=settings.AULA_LTI_ROSTER_REFRESH_SECONDS)
    result.roster_due = bool(course and context.memberships_url and stale)
    if course is None:
        if role == Role.STUDENT:
            raise LaunchRefused("not_linked", "Your teacher has not connected this course to Aula yet.")
        return result  # a teacher: the view asks which Aula course this is
    if result.deep_linking:
        return result
    if link is not None:
        target = lti_targets.get(link.target, link.target_id)
        if target is None or target.course_id != course.pk:
            raise LaunchRefused("gone", "What this link pointed to is no longer in this course.")
        result.landing = target.url
    else:
        result.landing = "/"
    return result


def context_link(*, context: LtiContext, course: Course, actor: User) -> LtiContext:
    """A teacher says which Aula course an LMS course is (they must teach it, in the platform's district)."""
    if course.institution.district_id != context.platform.district_id or not selectors.can_teach(actor, course):
        raise PermissionDenied("You can only link a course you teach in this district.")
    with transaction.atomic():
        context = LtiContext.objects.select_for_update().get(pk=context.pk)
        if context.course_id and context.course_id != course.pk:
            raise ValidationError("This LMS course is already linked to another Aula course.")
        context.course, context.institution_id = course, course.institution_id
        context.save(update_fields=["course", "institution"])
    return context


# --- deep linking -------------------------------------------------------------------------------------------

def deep_link_place(*, context: LtiContext, actor: User, picks: list[tuple[str, int]]) -> list[dict]:
    """Placements for the chosen sessions/exams and their LTI content items (ltiResourceLink, opening in a new
    window, with a grade column when the item is graded)."""
    course = context.course
    if course is None or not selectors.can_teach(actor, course):
        raise PermissionDenied("Only the course's teachers place Aula activities in it.")
    if not picks:
        raise ValidationError("Choose at least one activity.")
    items = []
    with transaction.atomic():
        for kind, target_id in picks:
            target = lti_targets.get(kind, target_id)
            if target is None or target.course_id != course.pk:
                raise ValidationError("That activity is not in this course.")
            link = LtiResourceLink.objects.create(context=context, institution_id=course.institution_id,
                                                  target=kind, target_id=target.id, title=target.title[:255],
                                                  created_by=actor)
            item = {"type": "ltiResourceLink", "title": target.title, "text": target.detail,
                    "url": settings.AULA_PUBLIC_URL + "/lti/launch/",
                    "custom": {"aula_link": str(link.pk)},
                    "window": {"targetName": f"aula-{kind}-{target.id}"}}
            if target.score_maximum:
                item["lineItem"] = {"scoreMaximum": target.score_maximum, "label": target.title[:255],
                                    "resourceId": f"aula-{kind}-{target.id}", "tag": "aula"}
            items.append(item)
    return items


# --- roster (NRPS) ------------------------------------------------------------------------------------------

_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?', re.IGNORECASE)


def _members(context: LtiContext) -> tuple[list[dict], bool]:
    """The context's NRPS members, and whether that is all of them (False past MAX_MEMBER_PAGES pages)."""
    conn = lti.connector(context.platform)
    url, members, pages = context.memberships_url, [], 0
    while url and pages < MAX_MEMBER_PAGES:
        response = _service_get(conn, [lti.NRPS_SCOPE], url, MEMBERSHIP_MEDIA)
        body = response.json()
        members.extend(body.get("members") or [])
        match = _NEXT.search(response.headers.get("Link", ""))
        url, pages = (match.group(1) if match else None), pages + 1
    return members, not url


def _active_subjects(members: list[dict]) -> set[str]:
    return {str(m.get("user_id")) for m in members
            if m.get("user_id") and (m.get("status") or "Active") == "Active" and lti.course_role(m.get("roles") or [])}


def _service_request(conn: lti.CachedTokenConnector, scopes, method: str, url: str, *, accept: str,
                     body: dict | None = None, media: str = "") -> requests.Response:
    """One LTI service call with the cached bearer token; a 401 (revoked or expired early) gets one fresh token,
    then the answer is returned whatever it is."""
    headers = {"Accept": accept, **({"Content-Type": media} if body is not None else {})}
    data = json.dumps(body) if body is not None else None
    for attempt in (1, 2):
        token = conn.get_access_token(scopes)
        response = conn._requests_session.request(method, url, data=data,
                                                  headers={**headers, "Authorization": f"Bearer {token}"})
        if response.status_code == 401 and attempt == 1:
            conn.forget_token(scopes)
            continue
        return response
    raise AssertionError("unreachable")


def _service_get(conn: lti.CachedTokenConnector, scopes, url: str, accept: str) -> requests.Response:
    response = _service_request(conn, scopes, "GET", url, accept=accept)
    response.raise_for_status()
    return response


@dataclass
class RosterReport:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    dropped: int = 0
    conflicts: list[str] = field(default_factory=list)
    unmatched: int = 0

    def as_dict(self) -> dict:
        return {"added": self.added, "changed": self.changed, "unchanged": self.unchanged, "dropped": self.dropped,
                "conflicts": self.conflicts[:50], "conflict_count": len(self.conflicts), "unmatched": self.unmatched}


def roster_sync(*, context_id: int) -> dict:
    """Reconcile the linked course's enrollments with the LMS roster (NRPS): adds, role changes and drops,
    each through the enrollment services. A course the SIS rosters keeps its SIS enrollments: the LMS does not
    drop them (reported as conflicts instead). Safe to run twice."""
    from compliance.selectors import course_is_sis_rostered

    context = LtiContext.objects.select_related("platform", "course__institution").filter(pk=context_id).first()
    if context is None or context.course is None or not context.memberships_url:
        return {}
    platform, course = context.platform, context.course
    members, complete = _members(context)
    report = RosterReport()
    active_subs = _active_subjects(members)
    kept_users: set[int] = set()
    for member in members:
        person = Person.from_member(member)
        role = lti.course_role(member.get("roles") or [])
        if person.sub not in active_subs or role is None:
            continue
        try:
            with transaction.atomic():
                user = person_account(platform=platform, person=person, provision_at=course.institution, role=role)
                outcome = _enroll(user, course, role) if user is not None and user.is_active else None
        except (LaunchRefused, ValidationError) as exc:
            report.unmatched += 1
            report.conflicts.append(f"{person.sub}: {getattr(exc, 'code', 'invalid')}")
            continue
        if user is not None:
            kept_users.add(user.pk)
        if outcome is None:
            report.unmatched += 1
        else:
            setattr(report, outcome, getattr(report, outcome) + 1)
    # One Aula course may be linked from several LMS courses of this platform (one per section): someone in any
    # of their rosters stays. Drops are only decided on complete rosters.
    for other in LtiContext.objects.filter(course=course, platform=platform).exclude(pk=context.pk).exclude(
            memberships_url=""):
        other_members, other_complete = _members(other)
        complete = complete and other_complete
        active_subs |= _active_subjects(other_members)
    if not complete:
        report.conflicts.append(f"roster longer than {MAX_MEMBER_PAGES} pages: nobody dropped")
        return _roster_done(context, report)
    sis = course_is_sis_rostered(course.pk)
    linked = ExternalIdentity.objects.filter(kind=ExternalIdentity.Kind.LTI, issuer=platform.issuer,
                                             district_id=platform.district_id)
    still_here = linked.filter(subject__in=active_subs).values("user_id")
    gone = (Enrollment.objects.filter(course=course, is_active=True,
                                      user__in=linked.exclude(subject__in=active_subs).values("user_id"))
            .exclude(user__in=still_here).exclude(user__in=kept_users))
    for enrollment in gone.select_related("user"):
        if sis:
            report.conflicts.append(f"enrollment {enrollment.pk}: not in the LMS roster, kept (the SIS rosters it)")
            continue
        services.enrollment_drop(enrollment=enrollment)
        report.dropped += 1
    return _roster_done(context, report)


def _roster_done(context: LtiContext, report: RosterReport) -> dict:
    context.roster_synced_at, context.roster_report = timezone.now(), report.as_dict()
    context.save(update_fields=["roster_synced_at", "roster_report"])  # audited (auditlog): one entry per run
    log.info("lti roster reconciled", extra={"context": context.pk, **{k: v for k, v in report.as_dict().items()
                                                                      if k != "conflicts"}})
    return report.as_dict()


# --- grades (AGS) -------------------------------------------------------------------------------------------

class ScoreError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def _service_send(conn, scopes, method: str, url: str, body: dict, media: str) -> requests.Response:
    return _service_request(conn, scopes, method, url, accept=media, body=body, media=media)


def _is_permanent(status: int) -> bool:
    """A refusal that the same request will get again (not auth, timeout, conflict or rate limit)."""
    return 400 <= status < 500 and status not in (401, 408, 409, 429)


def _raise_for(response: requests.Response) -> None:
    if 200 <= response.status_code < 300:
        return
    raise ScoreError(f"HTTP {response.status_code}", permanent=_is_permanent(response.status_code))


def _lineitem_ensure(link: LtiResourceLink, conn, score_maximum: float) -> str:
    """The grade column of a placement: the one the platform gave, else the one Aula made before (found by
    resourceId), else a new one. The link row is locked so that two deliveries do not make two columns."""
    known = LtiResourceLink.objects.filter(pk=link.pk).values_list("lineitem_url", flat=True).first()
    if known:
        return known  # no lock: a lock held across the score POST would deliver a column's scores one at a time
    with transaction.atomic():
        link = LtiResourceLink.objects.select_for_update().select_related("context").get(pk=link.pk)
        if link.lineitem_url:
            return link.lineitem_url
        container = link.context.lineitems_url
        if not container:
            raise ScoreError("the LMS gave no grade service for this course", permanent=True)
        resource_id = f"aula-{link.target}-{link.target_id}"
        sep = "&" if "?" in container else "?"
        found = _service_get(conn, lti.AGS_SCOPES, f"{container}{sep}resource_id={resource_id}", LINEITEMS_MEDIA)
        items = [i for i in found.json() if i.get("resourceId") == resource_id]
        if items:
            url = items[0]["id"]
        else:
            body = {"scoreMaximum": score_maximum, "label": link.title, "resourceId": resource_id, "tag": "aula"}
            if link.resource_link_id:
                body["resourceLinkId"] = link.resource_link_id
            response = _service_send(conn, lti.AGS_SCOPES, "POST", container, body, LINEITEM_MEDIA)
            _raise_for(response)
            url = response.json()["id"]
        link.lineitem_url = url[:500]
        link.save(update_fields=["lineitem_url"])
        return link.lineitem_url


def score_post(*, link_id: int, user_id: int, score_given: float | None, score_maximum: float, timestamp: str,
               activity_progress: str = "Completed", grading_progress: str = "FullyGraded") -> None:
    """Post one score to the LMS gradebook (AGS). Idempotent: the same timestamp again changes nothing there,
    an older one is ignored by the platform. Raises ScoreError (permanent or not)."""
    link = LtiResourceLink.objects.select_related("context__platform").filter(pk=link_id).first()
    if link is None or not link.context.platform.is_active:
        raise ScoreError("the LMS placement or platform is gone", permanent=True)
    platform = link.context.platform
    sub = ExternalIdentity.objects.filter(kind=ExternalIdentity.Kind.LTI, issuer=platform.issuer,
                                          district_id=platform.district_id, user_id=user_id) \
        .values_list("subject", flat=True).first()
    if sub is None:
        raise ScoreError("the student has never come from this LMS", permanent=True)
    conn = lti.connector(platform)
    try:
        lineitem = _lineitem_ensure(link, conn, score_maximum)
        body = {"userId": sub, "scoreMaximum": score_maximum, "activityProgress": activity_progress,
                "gradingProgress": grading_progress, "timestamp": timestamp}
        if score_given is not None:  # PendingManual: no score yet (AGS 2.0, "Score publish service")
            body["scoreGiven"] = score_given
        scores_url = AssignmentsGradesService._add_url_path_ending(lineitem, "scores")
        _raise_for(_service_send(conn, lti.AGS_SCOPES, "POST", scores_url, body, SCORE_MEDIA))
    except LtiServiceException as exc:  # the token request itself failed
        raise ScoreError(f"token refused ({exc.__class__.__name__})") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise ScoreError(f"HTTP {status}", permanent=_is_permanent(status)) from None
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise ScoreError(type(exc).__name__) from None
