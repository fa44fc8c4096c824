"""Every read path is audited or explicitly exempt: URL routes, admin registrations, WebSocket routes, Celery
tasks and management commands are enumerated from their registries; a new one fails here until it is either
wired to compliance.audit or added to ALLOWED with the reason it reads no other person's student record.
"""

from __future__ import annotations

import inspect

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver

from compliance import audit

OWN_APPS = ("classrooms", "exams", "streaming", "moderation", "analytics", "compliance", "config")
SELF = ("the student's own attempt (self-access: FERPA 99.32(d)(1) needs no record) on the exam hot path "
        "(2,000 students at a start); the attempt's own integrity log records its use")

# Paths that read no student record of another person, each with why (docs/compliance.md).
ALLOWED: dict[str, str] = {
    # HTTP
    "config.health.liveness": "probe, no data",
    "config.health.readiness": "probe, no data",
    "classrooms.auth.ThrottledLoginView": "sign-in form",
    "django.contrib.auth.views.LogoutView": "sign-out",
    "compliance.oauth.ThrottledTokenView": "issues API tokens, no records",
    "drf_spectacular.views.SpectacularAPIView": "the API schema",
    "drf_spectacular.views.SpectacularSwaggerSplitView": "the API docs page",
    # A parent's own child's consent records (docs/compliance.md): FERPA 99.32(d)(1) needs no record of a
    # parent's access; the guardian's revocation and deletion requests are recorded by their services.
    "compliance.coppa.views.guardian_home": "a parent's own child's consent records (99.32(d)(1))",
    "compliance.coppa.views.consent_revoke": "POST: a parent revokes consent (recorded by its service)",
    "compliance.coppa.views.deletion_ask": "a parent asks for deletion (recorded by its service)",
    "config.urls.api_not_found": "an error body",
    "classrooms.views.home": "the viewer's own courses and session titles",
    "classrooms.views.session_room": "the room's shell; students' data comes over the socket, audited there",
    "exams.views.exam_list": "the student's own exams and attempts (self-access, exam start hot path); "
                             "teachers see exam titles only",
    "exams.views.exam_start": SELF,
    "exams.views.attempt_page": SELF,
    "exams.views.attempt_result": SELF,
    "exams.views.exam_release": "POST only: releases grades (a write audited by its service), shows none",
    "exams.api.views.AttemptClock": SELF,
    "exams.api.views.AttemptAnswer": SELF,
    "exams.api.views.AttemptSubmit": SELF,
    "exams.api.views.AttemptEvent": SELF,
    # Jobs that write or delete, and show no record back
    "compliance.management.commands.roster_import": "writes the district's roster from its own SIS files; "
                                                    "reports only the file's own rows back (errors)",
    "compliance.management.commands.district_dispose": "deletes a district's student data; prints counts "
                                                       "(the disposition certificate), no records",
    "compliance.tasks.district_dispose": "deletes a district's student data; keeps counts only",
    "compliance.coppa.tasks.retention_purge": "deletes children's data past retention; keeps counts only",
    "classrooms.tasks.collab_compact": "folds a whiteboard/notes log into a checkpoint; shows no record",
    "classrooms.tasks.collab_session_compact": "folds a whiteboard/notes log into a checkpoint; shows no record",
    "classrooms.tasks.collab_compact_due": "folds whiteboard/notes logs into checkpoints; shows no record",
    "classrooms.collab_views.collab_assets": "images teachers added to a course (not student records)",
    "classrooms.collab_views.collab_asset": "an image a teacher added to a course (not a student record)",
    "classrooms.consumers.CollabConsumer": "the live class's own board and notes, shown to the class as written "
                                           "(like class chat); exports, history and contributions are recorded "
                                           "in classrooms.collab_views",
    # WebSocket
    "exams.consumers.AttemptConsumer": SELF,
    "config.routing.UnknownRouteConsumer": "refuses the socket",
    "streaming.consumers.StreamConsumer": "a public live stream room: streams are not school records; shows "
                                         "public display names and chat only",
    "streaming.views.watch": "a public live stream page (not a school record)",
    "streaming.views.watch_chat": "a public live stream's chat pop-out (not a school record)",
    "streaming.views.watch_embed": "a public live stream's embeddable player (not a school record)",
    "streaming.admin.StreamAdmin": "streams and their settings, not school records",
    "streaming.admin.StreamChatBanAdmin": "channel chat bans, not school records",
    # admin: the audit trail itself (its exports are recorded; browsing is not, or each look at the log
    # would add to it)
    "compliance.admin.AccessEntryAdmin": "the access log; its CSV export is recorded",
    "compliance.admin.DisclosureAdmin": "the record of disclosures; its CSV export is recorded",
    # Celery tasks: processing that shows nothing to anyone
    "classrooms.tasks.sessions_purge": "deletes expired login sessions and tokens",
    "classrooms.tasks.presence_sweep": "removes presence ghosts in Redis",
    "classrooms.tasks.attendance_compute": "derives attendance records; they are recorded when someone views them",
    "exams.tasks.attempt_finalize_due": "closes an attempt at its deadline (system processing)",
    "exams.tasks.attempts_close_due": "closes due attempts at a deadline (system processing)",
    "exams.tasks.attempts_after_close": "auto-grades closed attempts (system processing)",
    "exams.tasks.attempts_after_close_sweep": "auto-grades attempts a lost task left (system processing)",
    "exams.tasks.attempts_sweep": "finalises attempts past their deadline (system processing)",
    "exams.tasks.notification_send": "emails a student their own notice (self), no content beyond the exam title",
    # analytics (docs/analytics.md): aggregate counts per time bucket, never a per-person row; class slices by
    # segment or grade suppress cells under AULA_ANALYTICS_MIN_GROUP
    "analytics.views.stream_analytics": "aggregate stream counts (streams are not school records)",
    "analytics.views.stream_analytics_csv": "aggregate stream counts (streams are not school records)",
    "analytics.views.session_analytics": "aggregate class counts, small groups suppressed",
    "analytics.views.session_analytics_csv": "aggregate class counts, small groups suppressed",
    "analytics.api.views.StreamSlice": "aggregate stream counts (streams are not school records)",
    "analytics.api.views.SessionSlice": "aggregate class counts, small groups suppressed",
    "analytics.api.views.PipelineStatus": "pipeline health figures, no records",
    "analytics.tasks.flush": "aggregates buffered events into counts (system processing)",
    "analytics.tasks.webhook_deliver": "sends a learning event to the school's own configured integration "
                                       "(pseudonymous ids); delivery status is kept",
    "analytics.tasks.webhook_sweep": "re-queues due webhook deliveries",
    # Observability (docs/observability.md): room keys and connection figures, no person's records
    "analytics.metrics.metrics_view": "Prometheus figures per room (kind and id) and per process; no records",
    "analytics.health_tasks.alerts_evaluate": "evaluates connection figures of rooms (system processing)",
    "analytics.health_tasks.room_health_persist": "stores rooms' connection figures (system processing)",
    "analytics.health_tasks.alert_email_send": "e-mails an operational alert (room key and figures only)",
    "analytics.health_tasks.alert_webhook_deliver": "posts an operational alert (room key and figures only)",
    # management commands
    "classrooms.management.commands.seed_demo": "writes demo data",
    "compliance.management.commands.secrets_rotate": "re-encrypts stored credentials; prints counts, and the "
                                                    "model and id of a credential it cannot read",
    # LTI 1.3 (docs/lti.md): the launch lands a person in their own course; grades leave through the audited
    # GradeSync queue (a disclosure per delivered result) and enrollments change through audited services
    "classrooms.lti_views.jwks": "Aula's public keys",
    "classrooms.lti_views.tool_configuration": "Aula's LTI endpoints (configuration, no data)",
    "classrooms.lti_views.login_initiation": "the OIDC login redirect (no data)",
    "classrooms.lti_views.launch": "signs the person in from their LMS; shows them their own landing page",
    "classrooms.lti_views.handoff": "signs the launching person in (their own session)",
    "classrooms.lti_views.deep_link": "a teacher's picker: titles of their own course's sessions and exams",
    "classrooms.lti_views.context_link": "a teacher links an LMS course to a course they teach; roster counts",
    "classrooms.sso_views.start": "finds a district's sign-in by slug or email domain; shows provider names only",
    "classrooms.sso_views.begin": "redirects to the district's identity provider; no records",
    "classrooms.sso_views.oidc_callback": "signs the person into their own account; shows no record",
    "classrooms.sso_views.saml_acs": "validates the IdP's assertion for the person's own sign-in; shows no record",
    "classrooms.sso_views.saml_complete": "opens the person's own session; shows no record",
    "classrooms.sso_views.saml_metadata": "our public SAML SP metadata; no records",
    "classrooms.lti_views.dynamic_registration": "registers an LMS for a district (configuration, no records)",
    "classrooms.lti_admin.LtiRegistrationInviteAdmin": "a district's LMS registration links (no records)",
    "classrooms.lti_admin.LtiPlatformAdmin": "a district's LMS registrations (configuration, no records)",
    "classrooms.lti_admin.LtiToolKeyAdmin": "Aula's public signing keys (superusers)",
    "classrooms.lti_admin.LtiContextAdmin": "linked LMS courses and roster reconciliation counts",
    "classrooms.lti_admin.LtiResourceLinkAdmin": "placements of sessions and exams in LMS courses",
    "classrooms.lti_admin.LtiLaunchAdmin": "who launched what from the LMS and when (sign-in log, no records)",
    "classrooms.lti_admin.ExternalIdentityAdmin": "which LMS / identity-provider account is which account",
    "classrooms.tasks.lti_roster_sync": "reconciles enrollments with the LMS roster (audited writes), counts only",
    "classrooms.tasks.lti_keys_rotate_due": "rotates Aula's signing keys",
    "compliance.tasks.sis_run_execute": "writes the district's roster from its own SIS; keeps counts, sourcedIds "
                                        "and error messages only",
    "compliance.tasks.sis_sync_sweep": "queues due SIS syncs and stale runs (system processing)",
    "exams.tasks.grade_sync_sweep": "re-queues due grade deliveries (each recorded when delivered)",
    "exams.tasks.session_quiz_grades_send": "queues class quiz results for the LMS (each recorded when delivered)",
    # Live media: creators' channels and streams are not school records (streaming/models.py)
    "streaming.pages.channel_page": "a creator's public channel page: titles and a follower count",
    "streaming.pages.channel_follow": "POST: the user follows or unfollows a channel",
    "streaming.pages.notification_preferences": "the user's own notification settings and follows",
    "streaming.pages.dashboard_page": "the dashboard's shell; its figures are counts, no person's records",
    "streaming.notifications.NotificationConsumer": "the user's own notices (their own user room)",
    "streaming.dashboard.DashboardConsumer": "a stream's audience figures (counts), creator and moderators only",
    "streaming.notifications.stream_live_fanout": "notifies a channel's followers that it is live (own notices)",
    "streaming.notifications.live_email_chunk": "emails followers their own live notice, stream title only",
    # Moderation (docs/moderation.md): the queue's rows are recorded where they are shown (moderation.views)
    "moderation.views.queue_claim": "POST: a moderation action (in the moderation audit trail); shows no record",
    "moderation.views.queue_release": "POST: a moderation action (in the moderation audit trail); shows no record",
    "moderation.views.queue_assign": "POST: a moderation action (in the moderation audit trail); shows no record",
    "moderation.views.queue_decide": "POST: a moderation action (in the moderation audit trail); shows no record",
    "moderation.views.queue_escalate": "POST: a moderation action (in the moderation audit trail); shows no record",
    "moderation.consumers.QueueConsumer": "ids, versions and counts only; rows are read (and recorded) through "
                                          "the queue item page",
    "moderation.tasks.escalate_overdue": "moves overdue items up a tier (system processing)",
    "moderation.tasks.tier_notify": "emails reviewers a link to the queue, no content",
    "classrooms.views.profile": "the user's own display name",
    "moderation.manage_views.home": "links to the person's moderation tools",
    "moderation.manage_views.lists": "pattern lists (rules, not records)",
    "moderation.manage_views.list_detail": "a pattern list's rules (not records)",
    "moderation.manage_views.list_export": "a pattern list's rules as CSV (not records)",
    "moderation.manage_views.try_scope": "screens text the reviewer types (no stored record)",
    "moderation.manage_views.policies": "moderation thresholds (not records)",
    "moderation.manage_views.policy_edit": "moderation thresholds (not records)",
    "moderation.manage_views.audit_list": "moderation audit entries: ids, categories and scores, never the text",
    "moderation.manage_views.audit_export": "moderation audit entries: ids, categories and scores, never the text",
    "moderation.manage_views.audit_verify": "hash-chain check results (no records)",
    "moderation.manage_views.transparency": "counts by action and category (no records)",
    "moderation.manage_views.notices": "the user's own moderation notices and appeals (self-access)",
    "moderation.admin.PatternListAdmin": "pattern lists (rules, not records)",
    "moderation.admin.ModerationPolicyAdmin": "thresholds (not records)",
    "moderation.admin.AuditEntryAdmin": "moderation audit entries: ids and scores, never the text",
    # DMCA (docs/dmca.md): stream recordings and claimants' notices are not school records
    "moderation.dmca_views.agent_page": "the designated agent's public page",
    "moderation.dmca_views.notice_form": "a public notice form (stream recordings, not school records)",
    "moderation.dmca_views.case_page": "a copyright case about a stream recording (not a school record)",
    "moderation.dmca_views.counter_form": "the uploader's counter-notice (not a school record)",
    "moderation.dmca_views.court_action": "POST: staff record a court action (not a school record)",
    "moderation.dmca_tasks.dmca_restore_sweep": "restores stream recordings when due (system processing)",
    "moderation.dmca_tasks.dmca_email_send": "emails a DMCA notice or counter-notice (not a school record)",
}


def dotted(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # the admin is checked through its registry
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.callback


def url_problems(patterns) -> list[str]:
    """Each route's view: a DRF view with AuditedAPIMixin, a view marked with `audit.reads` whose code
    records, or an ALLOWED one."""
    problems = []
    for route, callback in _walk(patterns):
        target = getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback
        name = dotted(target)
        if name in ALLOWED:
            continue
        if inspect.isclass(target) and issubclass(target, audit.AuditedAPIMixin):
            continue
        reads = getattr(target, "ferpa_reads", None)
        if not reads:
            problems.append(f"{route} -> {name}: not audited")
        elif "record_request_access" not in inspect.getsource(inspect.unwrap(target)):
            problems.append(f"{route} -> {name}: declares {reads} but never calls record_request_access")
    return problems


def admin_problems(registry) -> list[str]:
    problems = []
    for model, model_admin in registry.items():
        shown = [model, *(inline.model for inline in model_admin.inlines)]
        if not any(audit.is_student_record_model(m) for m in shown):
            continue
        if dotted(type(model_admin)) not in ALLOWED and not isinstance(model_admin, audit.AuditedAdminMixin):
            problems.append(f"{model._meta.label} admin {dotted(type(model_admin))}: not audited")
    return problems


def consumer_problems(patterns) -> list[str]:
    problems = []
    for p in patterns:
        consumer = p.callback.consumer_class
        name = dotted(consumer)
        if name in ALLOWED:
            continue
        if not getattr(consumer, "ferpa_reads", None):
            problems.append(f"{p.pattern} -> {name}: not audited")
        elif "record_socket_access" not in inspect.getsource(consumer):
            problems.append(f"{p.pattern} -> {name}: declares reads but never calls record_socket_access")
    return problems


def job_problems(jobs: dict[str, object]) -> list[str]:
    """Tasks (by name) and commands (by module): declared with `ferpa_reads` and recording, or ALLOWED."""
    problems = []
    for name, job in jobs.items():
        if name in ALLOWED:
            continue
        source = inspect.getsource(getattr(job, "run", None) or type(job))
        recorder = getattr(job, "ferpa_recorded_by", None)  # a service that records inside its transaction
        if recorder:
            from django.utils.module_loading import import_string

            source += inspect.getsource(import_string(recorder))
        if not getattr(job, "ferpa_reads", None):
            problems.append(f"{name}: not audited")
        elif "record_access" not in source:
            problems.append(f"{name}: declares reads but never calls record_access")
    return problems


def our_tasks() -> dict[str, object]:
    import analytics.health_tasks  # noqa: F401
    import classrooms.tasks  # noqa: F401  (registers the tasks)
    import compliance.coppa.tasks  # noqa: F401
    import compliance.tasks  # noqa: F401
    import exams.tasks  # noqa: F401
    import moderation.dmca_tasks  # noqa: F401
    import moderation.tasks  # noqa: F401
    import streaming.notifications  # noqa: F401
    from config.celery import app

    return {name: task for name, task in app.tasks.items() if name.startswith(OWN_APPS)}


def our_commands() -> dict[str, object]:
    from django.core.management import get_commands, load_command_class

    return {f"{app}.management.commands.{name}": load_command_class(app, name)
            for name, app in get_commands().items() if app.startswith(OWN_APPS)}


def test_every_url_route_is_audited_or_exempt():
    assert url_problems(get_resolver().url_patterns) == []


def test_every_admin_showing_student_records_is_audited():
    assert admin_problems(admin.site._registry) == []
    # The autocomplete (select2) endpoint of every admin is the audited one.
    assert not hasattr(admin.site.autocomplete_view, "__self__")


def test_every_websocket_route_is_audited_or_exempt():
    from config.routing import websocket_urlpatterns

    assert consumer_problems(websocket_urlpatterns) == []


def test_every_task_and_command_is_audited_or_exempt():
    jobs = {**our_tasks(), **our_commands()}
    assert "exams.tasks.transcript_generate" in jobs and "compliance.management.commands.ferpa_record" in jobs
    assert job_problems(jobs) == []


def test_the_allowlist_has_no_stale_entries():
    from config.routing import websocket_urlpatterns

    known = {dotted(getattr(cb, "cls", None) or getattr(cb, "view_class", None) or cb)
             for _, cb in _walk(get_resolver().url_patterns)}
    known |= {dotted(p.callback.consumer_class) for p in websocket_urlpatterns}
    known |= {dotted(type(ma)) for ma in admin.site._registry.values()}
    known |= set(our_tasks()) | set(our_commands())
    assert {"classrooms.views.session_attendance", "exams.consumers.ProctorConsumer",
            "classrooms.admin.EnrollmentAdmin", "exams.tasks.transcript_generate"} <= known  # enumeration works
    assert set(ALLOWED) - known == set()


# --- the checks fail on a new, unaudited path ----------------------------------------------------------------------

def _unaudited_view(request):
    from classrooms.models import Enrollment

    return list(Enrollment.objects.all())


@audit.reads("classrooms.Enrollment")
def _declared_but_silent(request):
    return None


def test_the_checks_catch_a_new_unaudited_path():
    from channels.generic.websocket import AsyncWebsocketConsumer
    from django.urls import path

    from classrooms.models import Enrollment

    urls = [path("roster/", _unaudited_view), path("silent/", _declared_but_silent)]
    assert [p.split(":")[0] for p in url_problems(urls)] == [
        "roster/ -> tests.compliance.test_ferpa_paths._unaudited_view",
        "silent/ -> tests.compliance.test_ferpa_paths._declared_but_silent"]

    class PlainEnrollmentAdmin(admin.ModelAdmin):
        pass

    assert admin_problems({Enrollment: PlainEnrollmentAdmin(Enrollment, admin.site)})

    class RosterConsumer(AsyncWebsocketConsumer):
        pass

    assert consumer_problems([path("ws/roster/", RosterConsumer.as_asgi())])

    class Job:
        ferpa_reads = None

        def run(self):
            return None

    assert job_problems({"exams.tasks.new_report": Job()}) == ["exams.tasks.new_report: not audited"]


@pytest.mark.parametrize("label", ["classrooms.Course", "nope.Model"])
def test_reads_refuses_models_that_are_not_student_records(label):
    with pytest.raises(ValueError):
        audit.reads(label)
