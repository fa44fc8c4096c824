"""Isolation between schools, generated from the registries: every admin the site registers and every
WebSocket route is tried by school A's people with school B's and another district's ids.

Nothing here lists the views by hand: a new admin or a new socket route is picked up by the enumeration and
fails until the matrix knows how to find its other-school rows (or says, in EXEMPT, why it holds none).
The API's own matrix is in the API tests.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from analytics import alerts
from analytics.models import RoomHealth
from classrooms import services as classroom_services
from classrooms.models import (
    District,
    DistrictRole,
    ExternalIdentity,
    LtiContext,
    LtiLaunch,
    LtiPlatform,
    LtiResourceLink,
    User,
)
from compliance import disclosures
from compliance.coppa import services as coppa_services
from config.asgi import application
from config.routing import websocket_urlpatterns
from exams import services as exam_services
from exams.models import Exam, Question
from moderation import patterns as moderation_patterns
from moderation import services as moderation_services
from moderation.models import ModerationItem, ModerationPolicy, PatternList, PatternRule
from streaming import services as streaming_services
from tests import factories
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)

MARK = "Zqx"  # in the names of other-school rows: a search for it must find none of them

# Admins whose rows belong to no school (platform records, creators' channels) or that only platform
# superusers see: why each is out of the school matrix.
EXEMPT = {
    "auth.Group": "permission groups: platform configuration, superusers only",
    "oauth2_provider.Application": "OAuth2 applications: platform configuration (district clients below)",
    "oauth2_provider.AccessToken": "tokens: platform operators only",
    "oauth2_provider.Grant": "grants: platform operators only",
    "oauth2_provider.IDToken": "tokens: platform operators only",
    "oauth2_provider.RefreshToken": "tokens: platform operators only",
    "auditlog.LogEntry": "the raw audit log: superusers only (schools read theirs as AccessEntry)",
    "streaming.Channel": "a creator's channel: live media, not a school's records",
    "streaming.Stream": "a creator's stream: live media, not a school's records",
    "streaming.NotificationPreference": "a user's notice settings for creators' channels, not a school's records",
    "streaming.LiveNotification": "deliveries of creators' live notices (read-only), not a school's records",
    "compliance.RetentionRun": "the platform's purge runs: counts only, superusers only",
    "streaming.StreamChatBan": "a creator's chat timeouts and bans: live media, not a school's records",
    "analytics.FlushLedger": "the analytics pipeline's ledger: stream-id ranges and counts, superusers only",
    "moderation.DmcaCase": "copyright cases about stream recordings: platform DMCA staff only (a permission)",
    "moderation.DmcaNotice": "copyright notices about stream recordings: platform DMCA staff only",
    "moderation.DmcaStrike": "copyright strikes of creators: platform DMCA staff only",
    "classrooms.LtiToolKey": "Aula's own LTI signing keys (public halves): platform superusers only",
    "classrooms.IdentityProvider": "districts' identity-provider settings: superusers only, no person's records",
}


def other_school_rows(model, world) -> list:
    """The rows of this model that belong to school B or to the other district (school C)."""
    foreign = [world.school_b.pk, world.school_c.pk]
    label = model._meta.label
    qs = model._default_manager.all()
    if label == "classrooms.User":
        return list(User.objects.filter(memberships__institution_id__in=foreign)
                    .exclude(memberships__institution=world.school_a).distinct())
    if label == "classrooms.District":
        return [world.other_district]
    if label == "classrooms.DistrictRole":
        return list(DistrictRole.objects.filter(district=world.other_district))
    if label in ("compliance.DistrictAPIClient", "classrooms.ExternalIdentity"):
        return list(qs.filter(district=world.other_district))
    if label in ("classrooms.LtiPlatform", "classrooms.LtiRegistrationInvite"):  # a district's LMS registration
        return list(qs.filter(district=world.other_district))
    if label == "classrooms.LtiLaunch":
        return list(qs.filter(context__institution_id__in=foreign))
    if label == "compliance.AccessEntry":
        return list(qs.filter(additional_data__institution__in=foreign))
    if label == "analytics.WebhookDelivery":
        return list(qs.filter(endpoint__institution_id__in=foreign))
    if label == "analytics.OutboxEvent":
        return list(qs.filter(institution_id__in=foreign))
    if label in ("analytics.RoomHealth", "analytics.Alert"):  # live-session rooms: `i<institution>.ls<id>`
        return list(qs.filter(room_key__regex=rf"^i({world.school_b.pk}|{world.school_c.pk})\."))
    if label == "moderation.Appeal":
        return list(qs.filter(item__institution_id__in=foreign))
    if label == "moderation.AuditEntry":
        return list(qs.filter(ledger__in=[f"i{pk}" for pk in foreign]))
    if getattr(qs, "tenant_field", None):
        return list(qs.filter(**{f"{qs.tenant_field}__in": foreign}))
    field_names = {f.name for f in model._meta.concrete_fields}
    if "institution" in field_names:
        return list(qs.filter(institution_id__in=foreign))
    raise AssertionError(f"{label}: the isolation matrix does not know its other-school rows; add it to "
                         f"other_school_rows() or to EXEMPT with the reason")


def _exam_for(course, title: str):
    now = timezone.now()
    exam = exam_services.exam_upsert(course=course, title=title, opens_at=now - dt.timedelta(hours=1),
                                     closes_at=now + dt.timedelta(hours=3), time_limit_minutes=30,
                                     status=Exam.Status.PUBLISHED)
    bank = exam_services.bank_create(course=course, title=f"{title} bank")
    q = exam_services.question_create(bank=bank, kind=Question.Kind.SHORT, prompt=f"{title} question",
                                      correct=["x"])
    exam_services.section_add(exam=exam, title="Part", questions=[q])
    exam.refresh_from_db()
    return exam


@pytest.fixture
def schools(world):
    """School B and the other district's school C get one of everything, with MARK in their names."""
    ids = {}
    for key in "bc":
        school, course, student = (getattr(world, f"school_{key}"), getattr(world, f"course_{key}"),
                                   getattr(world, f"student_{key}"))
        staff = factories.staff_of(school, f"{MARK}staff{key}")
        classroom_services.membership_grant(user=student, institution=school, role="student")
        exam = _exam_for(course, f"{MARK} exam {key}")
        attempt = exam_services.attempt_start(exam=exam, student=student)
        exam_services.accommodation_set(student=student, institution_id=school.pk, extra_minutes=10,
                                        note=f"{MARK} note")
        parent = factories.user(f"{MARK}parent{key}")
        classroom_services.guardianship_link(guardian=parent, student=student, institution=school)
        coppa_services.consent_record(student=student, institution=school, guardian_name=f"{MARK} parent",
                                      method="signed_form", evidence_reference=f"{MARK}-ref", scope=["chat"],
                                      actor=staff)
        coppa_services.school_authorization_record(
            institution=school, scope=["chat"], authorized_on=timezone.localdate(), signatory=f"{MARK} head",
            evidence_reference=f"{MARK}-auth", actor=staff)
        disclosures.record_manual_disclosure(student=student, institution_id=school.pk, party=f"{MARK} clinic",
                                             basis="health_safety", interest="emergency",
                                             categories=["health"], disclosed_at=timezone.now(), actor=staff)
        # A creator's stream (streams are not school records): school A's people are not its staff.
        channel = streaming_services.channel_upsert(owner=student, slug=f"{MARK.lower()}-ch-{key}", title=f"{MARK} ch")
        stream = streaming_services.stream_upsert(channel=channel, title=f"{MARK} stream {key}")
        ids[key] = {"exam": exam, "attempt": attempt, "stream": stream}
        session = getattr(world, f"session_{key}")
        # Moderation: a held message of the school's student, decided by its teacher (a ban), appealed.
        teacher = factories.user(f"{MARK}teacher{key}")
        factories.enroll(course, teacher, "teacher")
        moderation_lists = PatternList.objects.create(name=f"{MARK} list {key}", action="hold", institution=school)
        PatternRule.objects.create(pattern_list=moderation_lists, kind="term", pattern="zqxword")
        moderation_patterns.forget_cache()
        held = classroom_services.chat_message_post(session=session, author=student, body=f"{MARK} zqxword")
        item = ModerationItem.objects.get(source="class_chat", object_id=str(held.pk))
        moderation_services.item_decide(item_id=item.pk, actor=teacher, decision="ban", note=f"{MARK} abuse")
        moderation_services.appeal_file(item_id=item.pk, appellant=student, statement=f"{MARK} appeal")
        ModerationPolicy.objects.create(institution=school, fail_mode="closed")
        RoomHealth.objects.create(room_key=session.room_key, kind="session", object_id=session.pk,
                                  first_seen_at=timezone.now(), last_seen_at=timezone.now(), attempts=3)
        alerts.connection_failure_evaluate(room_key=session.room_key, figures={"successes": 10, "failures": 30})
        # LTI: the school's LMS course linked to its course, a placement, a launch and the student's LMS identity.
        # (School B shares school A's district, so its district's LMS is school A's too: no MARK in it.)
        mark = MARK if school.district_id != world.district.pk else ""
        platform, _ = LtiPlatform.objects.get_or_create(
            district=school.district, issuer=f"https://{mark.lower()}lms-{school.district_id}.example",
            client_id=f"{mark}client", defaults={"name": f"{mark} LMS", "deployment_ids": ["1"],
                                                  "auth_login_url": "https://lms.example/auth",
                                                  "auth_token_url": "https://lms.example/token",
                                                  "keyset_url": "https://lms.example/jwks"})
        context = LtiContext.objects.create(platform=platform, context_id=f"{MARK}-ctx-{key}", title=f"{MARK} ctx",
                                            course=course, institution=school)
        link = LtiResourceLink.objects.create(context=context, institution=school, target="session",
                                              target_id=session.pk, title=f"{MARK} link")
        LtiLaunch.objects.create(platform=platform, user=student, context=context, resource_link=link,
                                 message_type="LtiResourceLinkRequest", role="student")
        ExternalIdentity.objects.create(district=school.district, user=student, kind="lti", issuer=platform.issuer,
                                        subject=f"{MARK}-sub-{key}")
    return ids


def _registered():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def test_every_admin_is_in_the_matrix(world):
    unknown = []
    for model, _ in _registered():
        if model._meta.label in EXEMPT:
            continue
        try:
            other_school_rows(model, world)
        except AssertionError as exc:
            unknown.append(str(exc))
    assert unknown == []
    assert {m._meta.label for m, _ in _registered()} >= set(EXEMPT)  # no stale exemptions


def test_school_staff_never_reach_another_schools_rows_in_any_admin(client, world, schools):
    client.force_login(world.staff_a)
    tried = 0
    for model, _ in _registered():
        label = model._meta.label
        if label in EXEMPT:
            continue
        info = (model._meta.app_label, model._meta.model_name)
        foreign = other_school_rows(model, world)
        foreign_pks = {str(o.pk) for o in foreign}
        changelist = client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert changelist.status_code in (200, 302, 403), (label, changelist.status_code)
        if changelist.status_code == 200:
            shown = {str(o.pk) for o in changelist.context["cl"].result_list}
            assert not shown & foreign_pks, f"{label}: another school's rows in the changelist"
            searched = client.get(reverse("admin:{}_{}_changelist".format(*info)), {"q": MARK})
            if searched.status_code == 200 and "cl" in (searched.context or {}):
                assert not {str(o.pk) for o in searched.context["cl"].result_list} & foreign_pks, label
            if "institution" in {f.name for f in model._meta.concrete_fields}:
                filtered = client.get(reverse("admin:{}_{}_changelist".format(*info)),
                                      {"institution__id__exact": world.school_b.pk})
                if filtered.status_code == 200 and "cl" in (filtered.context or {}):
                    assert not {str(o.pk) for o in filtered.context["cl"].result_list} & foreign_pks, label
        for obj in foreign[:3]:
            for view in ("change", "delete", "history"):
                response = client.get(reverse(f"admin:{info[0]}_{info[1]}_{view}", args=[obj.pk]))
                # Missing (the admin redirects to its index), forbidden or not found: never the row.
                assert response.status_code in (302, 403, 404), (label, view, obj.pk, response.status_code)
                if response.status_code == 302:
                    assert response["Location"] in (reverse("admin:index"), f"/admin/login/?next={response.request['PATH_INFO']}"), (label, view)
                tried += 1
    assert tried >= 30  # the fixture gave the matrix rows to try in most admins


def test_a_search_never_counts_another_schools_rows(client, world, schools):
    """The changelist's counts ("N results (M total)") come from the scoped queryset too."""
    client.force_login(world.staff_a)
    for model, _ in _registered():
        if model._meta.label in EXEMPT:
            continue
        info = (model._meta.app_label, model._meta.model_name)
        response = client.get(reverse("admin:{}_{}_changelist".format(*info)), {"q": MARK})
        if response.status_code == 200 and "cl" in (response.context or {}):
            cl = response.context["cl"]
            own = len(list(cl.queryset))
            assert cl.result_count == own and cl.full_result_count == cl.root_queryset.count()
            # The search term itself is echoed (the search box, links that keep the filters): nothing else.
            text = re.sub(rf'q(=|%3D){MARK}|value="{MARK}"', "", response.content.decode())
            assert MARK not in text, model._meta.label


# --- WebSocket routes --------------------------------------------------------------------------------

async def _refusal(user, path: str) -> int | None:
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    if connected:
        output = await comm.receive_output(timeout=5)
        await comm.disconnect()
        return output.get("code") if output["type"] == "websocket.close" else None  # None: a frame, a leak
    return code


async def test_every_socket_route_refuses_another_schools_ids(world, schools):
    """School A's student, teacher and staff try each route with school B's and school C's ids."""
    people = [world.student_a, world.teacher_a, world.staff_a]
    foreign_ids = {
        "session_id": [world.session_b.pk, world.session_c.pk],
        "attempt_id": [schools["b"]["attempt"].pk, schools["c"]["attempt"].pk],
        "exam_id": [schools["b"]["exam"].pk, schools["c"]["exam"].pk],
        "stream_id": [schools["b"]["stream"].pk, schools["c"]["stream"].pk],
    }
    tried = 0
    for route in websocket_urlpatterns:
        names = list(route.pattern.converters)
        if not names:
            continue  # the catch-all that refuses unknown paths
        if str(route.pattern) == "ws/v1/streams/<int:stream_id>/":
            continue  # a public stream room: anonymous viewers are welcome (streams are not school records)
        unknown = [n for n in names if n not in foreign_ids]
        assert not unknown, f"{route.pattern}: add {unknown} to the isolation matrix"
        for i in range(2):
            path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(foreign_ids[m.group(1)][i]),
                                str(route.pattern))
            for person in people:
                code = await _refusal(person, path)
                assert code in (4403, 4404), (path, person.username, code)
                tried += 1
    assert tried == 5 * 2 * 3  # five routes with ids, two other schools, three people


def test_district_rows_of_another_district_stay_hidden(client, world):
    client.force_login(world.staff_a)
    response = client.get(reverse("admin:classrooms_district_changelist"))
    if response.status_code == 200:
        assert world.other_district.pk not in {d.pk for d in response.context["cl"].result_list}
    assert District.objects.count() >= 2
