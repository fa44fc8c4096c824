"""The DMCA workflow: notices (complete or refused), the take-down, the uploader's email and strike, the
counter-notice and its business-day clock, the restoration sweeper, court actions and repeat infringers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from config.celery import app as celery_app
from moderation import audit, dmca
from moderation.models import AuditEntry, DmcaCase, DmcaStrike
from streaming import events
from streaming import services as streaming_services
from streaming.models import Stream
from tests import factories

NY = ZoneInfo("America/New_York")
RECORDING = "https://video.example.test/rec/"


@pytest.fixture
def eager_tasks():
    """Celery tasks run in the process (the email task queued on commit sends at once)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def ended_stream(owner=None, title="Sourdough basics"):
    owner = owner or factories.user()
    channel = factories.channel(owner)
    stream = factories.stream(channel, title=title)
    n = Stream.objects.count()
    return streaming_services.stream_end(stream=stream, actor=owner, recording_url=f"{RECORDING}{n}")


def notice_for(stream: Stream, **over) -> dmca.NoticeInput:
    complete = dmca.NoticeInput(
        signature="Ada Claimant", copyrighted_work="The Bread Book (2019), chapter 3",
        material_url=f"http://localhost:8000/streams/{stream.pk}/", description="Minutes 3 to 10",
        complainant_name="Ada Claimant", complainant_address="1 Main St, Springfield, IL 62701",
        complainant_phone="+1 217 555 0100", complainant_email="ada@claims.example",
        good_faith=True, accurate_under_penalty=True)
    return dataclasses.replace(complete, **over)


def counter_for(stream: Stream, **over) -> dmca.CounterInput:
    complete = dmca.CounterInput(
        signature="Ben Uploader", material_identification="My stream recording",
        material_location=f"http://localhost:8000/streams/{stream.pk}/", mistake_under_penalty=True,
        name="Ben Uploader", address="2 Oak Ave, Portland, OR 97201", phone="+1 503 555 0199",
        consents_to_jurisdiction=True, accepts_service=True)
    return dataclasses.replace(complete, **over)


def steps(case: DmcaCase) -> list[str]:
    return list(AuditEntry.objects.filter(ledger=case.ledger, target_type="dmca_case", target_id=str(case.pk))
                .order_by("index").values_list("action", flat=True))


def dmca_staff(*, manage: bool = True):
    user = factories.user(staff=True)
    codenames = ["view_dmcacase"] + (["change_dmcacase"] if manage else [])
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="moderation", codename__in=codenames))
    return user


def on(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), tzinfo=NY)


# --- notices -----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_an_incomplete_notice_is_refused_with_what_is_missing_and_nothing_is_disabled():
    stream = ended_stream()
    data = notice_for(stream, signature=" ", complainant_phone="", complainant_email="not-an-email",
                      good_faith=False, accurate_under_penalty=False)

    with pytest.raises(dmca.Incomplete) as refused:
        dmca.notice_receive(data=data)

    missing = [name for name, _ in refused.value.missing]
    assert set(missing) == {"signature", "complainant_phone", "complainant_email", "good_faith",
                            "accurate_under_penalty"}
    labels = " ".join(label for _, label in refused.value.missing)
    assert "penalty of perjury" in labels and "good faith" in labels and "valid email" in labels
    stream.refresh_from_db()
    assert stream.recording_disabled_at is None and DmcaCase.objects.count() == 0
    assert DmcaStrike.objects.count() == 0 and mail.outbox == []
    [entry] = AuditEntry.objects.filter(action="notice_rejected")
    assert entry.ledger == audit.ledger_for(channel_id=stream.channel_id)
    assert entry.data == {"missing": sorted(set(missing))}
    assert "Ada" not in json.dumps(entry.data) + entry.reason and "Springfield" not in json.dumps(entry.data)


@pytest.mark.django_db
def test_a_notice_must_point_at_material_on_aula():
    stream = ended_stream()
    for url in ["", "https://elsewhere.example/video/1", "http://localhost:8000/c/some-channel/",
                "http://localhost:8000/streams/999999/"]:
        with pytest.raises(dmca.Incomplete) as refused:
            dmca.notice_receive(data=notice_for(stream, material_url=url))
        assert [name for name, _ in refused.value.missing] == ["material_url"]
    # The stream's page (any of its surfaces, relative or absolute) and its recording link all resolve.
    assert dmca.material_resolve(f"/streams/{stream.pk}/embed/").id == str(stream.pk)
    assert dmca.material_resolve(stream.recording_url).id == str(stream.pk)


@pytest.mark.django_db
def test_a_valid_notice_disables_the_recording_everywhere_emails_the_uploader_and_records_a_strike(
        eager_tasks, client, django_capture_on_commit_callbacks):
    creator = factories.user("creator")
    stream = ended_stream(creator)

    with django_capture_on_commit_callbacks(execute=True):
        case = dmca.notice_receive(data=notice_for(stream))

    stream.refresh_from_db()
    assert stream.recording_disabled_at is not None and case.status == DmcaCase.Status.DISABLED
    assert (case.material_type, case.material_id, case.uploader) == ("stream_recording", str(stream.pk), creator)
    [message] = mail.outbox
    assert message.to == [creator.email]
    assert "The Bread Book (2019), chapter 3" in message.body and "ada@claims.example" in message.body
    assert reverse("moderation:dmca-counter", args=[case.pk]) in message.body
    strike = DmcaStrike.objects.get(case=case)
    assert strike.user == creator and strike.removed_at is None
    assert (strike.expires_at - strike.created_at).days == 365
    assert steps(case) == ["notice_received", "material_disabled", "strike_recorded", "uploader_notified"]
    assert audit.verify(case.ledger) == (True, None)
    assert "Springfield" not in json.dumps(list(AuditEntry.objects.values_list("data", flat=True)))

    # Not shown or played anywhere: channel page, watch page, the status event.
    channel_page = client.get(reverse("stream-channel", args=[stream.channel.slug])).content.decode()
    assert stream.recording_url not in channel_page and "Sourdough basics" in channel_page
    watch = client.get(reverse("stream-watch", args=[stream.pk])).content.decode()
    assert stream.recording_url not in watch and 'data-testid="recording-disabled"' in watch
    assert events.stream_status(stream)["recording_url"] is None

    # The email task run again (a redelivery) sends nothing twice.
    notice = case.notices.get()
    assert dmca.dmca_email_deliver(kind="notice", notice_id=notice.pk) == "already sent"
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_second_notice_on_the_same_material_joins_its_case_without_a_second_strike(eager_tasks,
                                                                                    django_capture_on_commit_callbacks):
    stream = ended_stream()
    with django_capture_on_commit_callbacks(execute=True):
        first = dmca.notice_receive(data=notice_for(stream))
        second = dmca.notice_receive(data=notice_for(stream, material_url=stream.recording_url,
                                                     complainant_email="other@claims.example"))
    assert second.pk == first.pk and first.notices.count() == 2
    assert DmcaStrike.objects.count() == 1 and len(mail.outbox) == 2


# --- counter-notices and the clock ---------------------------------------------------------------------

@pytest.mark.django_db
def test_only_the_uploader_can_send_a_counter_notice(client):
    creator, outsider, school_staff, staff = factories.user(), factories.user(), factories.user(staff=True), \
        dmca_staff()
    stream = ended_stream(creator)
    case = dmca.notice_receive(data=notice_for(stream))
    url = reverse("moderation:dmca-counter", args=[case.pk])

    assert client.get(url).status_code == 302  # signed out: to the sign-in page
    for person, status in [(outsider, 404), (school_staff, 404), (staff, 403)]:
        client.force_login(person)
        assert client.get(url).status_code == status
        assert client.post(url, vars(counter_for(stream))).status_code == status
    with pytest.raises(PermissionDenied):
        dmca.counter_notice_submit(case_id=case.pk, user=outsider, data=counter_for(stream))
    case.refresh_from_db()
    assert case.status == DmcaCase.Status.DISABLED and case.counter_received_at is None


@pytest.mark.django_db
def test_an_incomplete_counter_notice_is_refused_and_lists_what_is_missing(client):
    creator = factories.user()
    stream = ended_stream(creator)
    case = dmca.notice_receive(data=notice_for(stream))
    client.force_login(creator)
    response = client.post(reverse("moderation:dmca-counter", args=[case.pk]),
                           {**vars(counter_for(stream)), "consents_to_jurisdiction": "", "phone": ""})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Federal District Court" in html and "Your telephone number" in html
    case.refresh_from_db()
    assert case.status == DmcaCase.Status.DISABLED and "counter_notice_rejected" in steps(case)


@pytest.mark.parametrize(("received", "not_before", "restore_by"), [
    # Friday before Thanksgiving (Thu 26 Nov 2026): Mon 23, Tue 24, Wed 25, Fri 27, then 30 Nov-4 Dec make
    # ten; the 11th business day is Tue 8 Dec; the 14th is Fri 11 Dec.
    (on("2026-11-20", 15), on("2026-12-08", 0), dt.datetime(2026, 12, 11, 23, 59, 59, tzinfo=NY)),
    # Received on a Saturday: the weekend counts for nothing, same window.
    (on("2026-11-21", 9), on("2026-12-08", 0), dt.datetime(2026, 12, 11, 23, 59, 59, tzinfo=NY)),
    # 03:00 UTC on Saturday is still Friday evening in New York: counted from Friday.
    (dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC), on("2026-12-08", 0),
     dt.datetime(2026, 12, 11, 23, 59, 59, tzinfo=NY)),
    # Independence Day 2026 is a Saturday, observed Friday 3 July: Thu 2 July + 10 business days.
    (on("2026-07-02", 10), on("2026-07-20", 0), dt.datetime(2026, 7, 23, 23, 59, 59, tzinfo=NY)),
])
def test_the_restoration_window_counts_us_federal_business_days_in_the_agents_time_zone(received, not_before,
                                                                                          restore_by, settings):
    settings.AULA_DMCA_TIMEZONE = "America/New_York"
    assert dmca.restore_window(received) == (not_before, restore_by)
    assert not_before.astimezone(NY).time() == dt.time(0, 0)


@pytest.mark.django_db
def test_the_sweeper_restores_at_restore_not_before_not_before_it_and_only_once(eager_tasks,
                                                                                django_capture_on_commit_callbacks):
    creator = factories.user()
    stream = ended_stream(creator)
    with django_capture_on_commit_callbacks(execute=True):
        case = dmca.notice_receive(data=notice_for(stream), now=on("2026-11-19"))
    with django_capture_on_commit_callbacks(execute=True):
        case = dmca.counter_notice_submit(case_id=case.pk, user=creator, data=counter_for(stream),
                                          now=on("2026-11-20", 15))
    assert case.status == DmcaCase.Status.COUNTER
    assert (case.restore_not_before, case.restore_by) == dmca.restore_window(on("2026-11-20", 15))
    forwarded = [m for m in mail.outbox if m.to == ["ada@claims.example"]]
    assert len(forwarded) == 1 and "2 Oak Ave, Portland" in forwarded[0].body and "Tuesday 08 December 2026" in \
        forwarded[0].body

    assert dmca.dmca_restore_due(now=case.restore_not_before - dt.timedelta(seconds=1)) == []
    stream.refresh_from_db()
    assert stream.recording_disabled_at is not None

    assert dmca.dmca_restore_due(now=case.restore_not_before) == [case.pk]
    assert dmca.dmca_restore_due(now=case.restore_not_before + dt.timedelta(minutes=1)) == []  # a second run
    stream.refresh_from_db()
    case.refresh_from_db()
    assert stream.recording_disabled_at is None and stream.recording_available
    assert case.status == DmcaCase.Status.RESTORED and case.restored_at == case.restore_not_before
    strike = DmcaStrike.objects.get(case=case)
    assert strike.removed_at == case.restore_not_before  # policy: a restored take-down leaves no strike
    assert steps(case) == ["notice_received", "material_disabled", "strike_recorded", "uploader_notified",
                           "counter_notice_received", "restore_scheduled", "counter_notice_forwarded",
                           "material_restored", "strike_removed"]
    assert audit.verify(case.ledger) == (True, None)


@pytest.mark.django_db
def test_a_court_action_reported_in_time_stops_the_restoration(client):
    creator, staff = factories.user(), dmca_staff()
    stream = ended_stream(creator)
    case = dmca.notice_receive(data=notice_for(stream))
    case = dmca.counter_notice_submit(case_id=case.pk, user=creator, data=counter_for(stream))
    viewer_only = dmca_staff(manage=False)
    client.force_login(viewer_only)
    assert client.post(reverse("moderation:dmca-court-action", args=[case.pk])).status_code == 403

    client.force_login(staff)
    response = client.post(reverse("moderation:dmca-court-action", args=[case.pk]), {"note": "N.D. Ill. 1:26-cv-1"})
    assert response.status_code == 302
    assert dmca.dmca_restore_due(now=case.restore_by + dt.timedelta(days=30)) == []
    case.refresh_from_db()
    stream.refresh_from_db()
    assert case.status == DmcaCase.Status.COURT and stream.recording_disabled_at is not None
    assert steps(case)[-1] == "court_action_reported"
    with pytest.raises(dmca.Conflict):  # twice, or after restoration: refused
        dmca.court_action_report(case_id=case.pk, actor=staff)


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweepers_restore_each_due_case_exactly_once():
    creator = factories.user()
    cases = []
    for i in range(6):
        stream = ended_stream(creator, title=f"Stream {i}")
        case = dmca.notice_receive(data=notice_for(stream), now=on("2026-11-19"))
        cases.append(dmca.counter_notice_submit(case_id=case.pk, user=creator, data=counter_for(stream),
                                                now=on("2026-11-20")))
    due_at = cases[0].restore_not_before
    results: list[list[int]] = []

    def sweep():
        try:
            results.append(dmca.dmca_restore_due(now=due_at, batch=2))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    restored = [pk for run in results for pk in run]
    assert sorted(restored) == sorted(c.pk for c in cases)
    assert AuditEntry.objects.filter(action="material_restored").count() == 6
    for case in cases:
        assert audit.verify(case.ledger) == (True, None)


# --- repeat infringers ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_third_active_strike_terminates_the_account(settings):
    settings.AULA_DMCA_TERMINATION_STRIKES = 3
    creator = factories.user()
    old = ended_stream(creator, title="Old")
    dmca.notice_receive(data=notice_for(old), now=timezone.now() - dt.timedelta(days=400))  # expired strike
    for title in ["One", "Two"]:
        dmca.notice_receive(data=notice_for(ended_stream(creator, title=title)))
    creator.refresh_from_db()
    assert creator.is_active  # two active strikes (the old one expired)

    case = dmca.notice_receive(data=notice_for(ended_stream(creator, title="Three")))
    creator.refresh_from_db()
    assert not creator.is_active
    assert steps(case)[-1] == "account_terminated"
    entry = AuditEntry.objects.get(action="account_terminated")
    assert entry.data["user_id"] == creator.pk and entry.data["active_strikes"] == 3
    assert audit.verify(case.ledger) == (True, None)


# --- the pages -----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_agent_page_shows_the_designated_agent(client, settings):
    settings.AULA_DMCA_AGENT_NAME = "Copyright Agent, Aula Inc."
    settings.AULA_DMCA_AGENT_EMAIL = "copyright@aula.example"
    settings.AULA_DMCA_AGENT_ADDRESS = "500 Market St\nSan Francisco, CA"
    settings.AULA_DMCA_AGENT_PHONE = "+1 415 555 0123"
    html = client.get(reverse("moderation:dmca-agent")).content.decode()
    assert "Copyright Agent, Aula Inc." in html and "copyright@aula.example" in html
    assert "500 Market St<br>San Francisco, CA" in html and "+1 415 555 0123" in html
    assert reverse("moderation:dmca-notice") in html


@pytest.mark.django_db
def test_the_notice_form_refuses_an_incomplete_notice_and_accepts_a_complete_one(client):
    stream = ended_stream()
    partial = {"material_url": f"/streams/{stream.pk}/", "copyrighted_work": "My song"}
    response = client.post(reverse("moderation:dmca-notice"), partial)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-testid="missing"' in html and "Your postal address" in html and "penalty of perjury" in html
    assert DmcaCase.objects.count() == 0

    response = client.post(reverse("moderation:dmca-notice"), {**vars(notice_for(stream)), "good_faith": "on",
                                                               "accurate_under_penalty": "on"})
    assert response.status_code == 302 and DmcaCase.objects.count() == 1


@pytest.mark.django_db
def test_the_notice_form_is_rate_limited_per_address(client, settings):
    settings.AULA_DMCA_NOTICES_PER_HOUR = 2
    for _ in range(2):
        assert client.post(reverse("moderation:dmca-notice"), {}).status_code == 400
    assert client.post(reverse("moderation:dmca-notice"), {}).status_code == 429
    assert client.get(reverse("moderation:dmca-notice")).status_code == 200  # reading the form is not limited


@pytest.mark.django_db
def test_the_case_page_is_for_staff_and_the_uploader_with_a_countdown_and_inert_user_text(client):
    creator, outsider, school_staff, staff = factories.user(), factories.user(), factories.user(staff=True), \
        dmca_staff()
    stream = ended_stream(creator)
    case = dmca.notice_receive(data=notice_for(stream, copyrighted_work="<script>alert('work')</script>",
                                               complainant_name="<b>Eve</b>"))
    url = reverse("moderation:dmca-case", args=[case.pk])
    assert client.get(url).status_code == 404
    for person in [outsider, school_staff]:
        client.force_login(person)
        assert client.get(url).status_code == 404

    client.force_login(creator)
    html = client.get(url).content.decode()
    assert "<script>alert('work')</script>" not in html and "&lt;script&gt;alert(&#x27;work&#x27;)" in html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html
    assert "Springfield" not in html  # the claimant's address is for staff only
    assert 'data-testid="counter-link"' in html and "data-countdown-to" not in html

    dmca.counter_notice_submit(case_id=case.pk, user=creator, data=counter_for(stream))
    case.refresh_from_db()
    html = client.get(url).content.decode()
    assert f'data-countdown-to="{case.restore_not_before.isoformat()}"' in html
    assert "moderation/dmca_countdown.js" in html and "<script>" not in html.split("</main>")[0]
    assert 'data-testid="court-form"' not in html
    assert 'data-action="restore_scheduled"' in html

    client.force_login(staff)
    html = client.get(url).content.decode()
    assert 'data-testid="court-form"' in html and "Springfield" in html and "data-countdown-to" in html


@pytest.mark.django_db
def test_the_admin_shows_cases_and_strikes_to_dmca_staff_read_only(client):
    import importlib

    from django.urls import clear_url_caches

    import config.urls
    import moderation.dmca_admin  # noqa: F401  (moderation/admin.py imports it once wired)

    importlib.reload(config.urls)  # admin URLs are built when the URLconf is imported
    clear_url_caches()

    stream = ended_stream()
    case = dmca.notice_receive(data=notice_for(stream))
    strike = DmcaStrike.objects.get(case=case)
    client.force_login(factories.user(staff=True))  # a school administrator
    assert client.get(reverse("admin:moderation_dmcacase_changelist")).status_code == 403
    client.force_login(dmca_staff())
    assert client.get(reverse("admin:moderation_dmcacase_changelist")).status_code == 200
    page = client.get(reverse("admin:moderation_dmcacase_change", args=[case.pk]))
    assert page.status_code == 200 and "Ada Claimant" in page.content.decode()
    assert client.get(reverse("admin:moderation_dmcastrike_change", args=[strike.pk])).status_code == 200
    assert client.get(reverse("admin:moderation_dmcacase_add")).status_code == 403
