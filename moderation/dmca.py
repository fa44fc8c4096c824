"""DMCA notice and takedown (17 U.S.C. §512(c) and (g)): every write of a case, each step audited in its transaction.

A complete notice opens a case (or joins the material's open one), disables the material in the same
transaction, records a strike against the uploader and queues the uploader's email on commit. The uploader's
counter-notice schedules restoration for the start of the 11th business day after its receipt; a database
sweeper (moderation.dmca_tasks.dmca_restore_sweep, every minute) restores every due case unless staff recorded
that the claimant filed a court action. The rules are in docs/dmca.md.

Material is named by a type and an id (DmcaMaterial); MATERIALS maps each type to how it is found, locked,
disabled and restored. Stream recordings are the only kind today.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import holidays
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone

from moderation import dmca_selectors as selectors
from moderation.audit import PLATFORM, audit_record, ledger_for
from moderation.models import DmcaCase, DmcaCounterNotice, DmcaMaterial, DmcaNotice, DmcaStrike

logger = logging.getLogger("aula.moderation.dmca")

STAGE = "dmca"
CASE = "dmca_case"
# §512(g)(2)(C): restore "not less than 10, nor more than 14, business days following receipt".
RESTORE_AFTER_BUSINESS_DAYS = 10
RESTORE_WITHIN_BUSINESS_DAYS = 14
SWEEP_BATCH = 100


class Conflict(Exception):
    """The case is not in a state that allows this step (e.g. a court action after restoration)."""


class Incomplete(Exception):
    """A notice or counter-notice lacks required elements: `missing` is [(field, what is missing), ...]."""

    def __init__(self, missing: list[tuple[str, str]]):
        super().__init__("; ".join(label for _, label in missing))
        self.missing = missing


# --- the elements the statute requires ----------------------------------------------------------------

NOTICE_ELEMENTS = {
    "signature": "Your physical or electronic signature (type your full legal name)",
    "copyrighted_work": "Identification of the copyrighted work you claim is infringed",
    "material_url": "Identification of the infringing material with its address on Aula (a stream or recording "
                    "URL), so that we can locate it",
    "complainant_name": "Your name",
    "complainant_address": "Your postal address",
    "complainant_phone": "Your telephone number",
    "complainant_email": "Your email address",
    "good_faith": "The statement that you have a good faith belief that use of the material in the manner "
                  "complained of is not authorized by the copyright owner, its agent, or the law",
    "accurate_under_penalty": "The statement that the information in the notice is accurate and, under penalty "
                              "of perjury, that you are authorized to act on behalf of the owner of the right "
                              "that is allegedly infringed",
}
MATERIAL_NOT_FOUND = ("The material's address does not lead to a stream or recording on Aula: give the address of "
                      "the stream's page (…/streams/<number>/) or of its recording")
EMAIL_INVALID = "A valid email address"

COUNTER_ELEMENTS = {
    "signature": "Your physical or electronic signature (type your full legal name)",
    "material_identification": "Identification of the material that was removed or to which access was disabled",
    "material_location": "The location at which the material appeared before it was removed or disabled",
    "mistake_under_penalty": "The statement under penalty of perjury that you have a good faith belief that the "
                             "material was removed or disabled as a result of mistake or misidentification",
    "name": "Your name",
    "address": "Your address",
    "phone": "Your telephone number",
    "consents_to_jurisdiction": "Your consent to the jurisdiction of the Federal District Court for the judicial "
                                "district in which your address is located (or, if your address is outside the "
                                "United States, any judicial district in which Aula may be found)",
    "accepts_service": "The statement that you will accept service of process from the person who provided the "
                       "notice, or an agent of that person",
}


@dataclass
class NoticeInput:
    signature: str = ""
    copyrighted_work: str = ""
    material_url: str = ""
    description: str = ""
    complainant_name: str = ""
    complainant_address: str = ""
    complainant_phone: str = ""
    complainant_email: str = ""
    good_faith: bool = False
    accurate_under_penalty: bool = False


@dataclass
class CounterInput:
    signature: str = ""
    material_identification: str = ""
    material_location: str = ""
    mistake_under_penalty: bool = False
    name: str = ""
    address: str = ""
    phone: str = ""
    consents_to_jurisdiction: bool = False
    accepts_service: bool = False


def _missing(data, elements: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, label in elements.items():
        value = getattr(data, name)
        if value is not True and not (isinstance(value, str) and value.strip()):
            out.append((name, label))
    return out


# --- material ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Material:
    type: str
    id: str
    title: str
    channel_id: int | None
    uploader_id: int | None


def _aula_host(host: str) -> bool:
    host = (host or "").split(":")[0].lower()
    public = (urlsplit(settings.AULA_PUBLIC_URL).hostname or "").lower()
    return host == public or any(h == "*" or host == h.lower() or (h.startswith(".") and host.endswith(h.lower()))
                                 for h in settings.ALLOWED_HOSTS)


def _stream_material(stream) -> Material:
    return Material(DmcaMaterial.STREAM_RECORDING, str(stream.pk), stream.title[:200], stream.channel_id,
                    stream.channel.owner_id)


STREAM_ROUTES = {"stream-watch", "stream-chat", "stream-embed"}


def material_resolve(url: str) -> Material | None:
    """The material an address on Aula points at: a stream's page (watch, chat, embed) or its recording link."""
    from streaming import selectors as streaming_selectors
    from streaming.models import Stream

    url = (url or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc and not _aula_host(parts.netloc):
        # Recordings are hosted by the video provider: the link shown under "Recording" names one exactly.
        stream = Stream.objects.select_related("channel").filter(recording_url=url).order_by("pk").first()
        return _stream_material(stream) if stream else None
    try:
        match = resolve(parts.path or "/")
    except Resolver404:
        return None
    if match.url_name not in STREAM_ROUTES:
        return None
    stream = streaming_selectors.stream_for_watch(match.kwargs["stream_id"])
    return _stream_material(stream) if stream else None


def _stream_recording_set(material_id: str, *, disabled_at: dt.datetime | None, reason: str) -> bool:
    from streaming.services import stream_recording_takedown

    return stream_recording_takedown(stream_id=int(material_id), disabled_at=disabled_at, reason=reason)


@dataclass(frozen=True)
class MaterialKind:
    disable: Callable  # (material id, case, now) -> found
    restore: Callable  # (material id, case, now) -> found
    location: Callable  # (material id) -> its path on Aula


MATERIALS = {
    DmcaMaterial.STREAM_RECORDING: MaterialKind(
        disable=lambda mid, case, now: _stream_recording_set(mid, disabled_at=now, reason=f"DMCA case #{case.pk}"),
        restore=lambda mid, case, now: _stream_recording_set(mid, disabled_at=None, reason=""),
        location=lambda mid: reverse("stream-watch", args=[int(mid)]),
    ),
}


# --- business days -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _federal_holidays(year: int) -> frozenset[dt.date]:
    # holidays.US(): the eleven U.S. federal holidays with their observed days (a Saturday holiday is
    # observed on the Friday before, a Sunday one on the Monday after). Not the financial-market calendar.
    return frozenset(holidays.US(years=year).keys())


def is_business_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _federal_holidays(day.year)


def business_day_after(day: dt.date, n: int) -> dt.date:
    """The n-th business day after `day` (the day itself is never counted)."""
    count = 0
    while count < n:
        day += dt.timedelta(days=1)
        if is_business_day(day):
            count += 1
    return day


def restore_window(received_at: dt.datetime, tz_name: str | None = None) -> tuple[dt.datetime, dt.datetime]:
    """(restore_not_before, restore_by) for a counter-notice received at `received_at`.

    Counted in the agent's time zone: the day of receipt is day 0 whatever the hour; the material is restored
    at the start (00:00) of the 11th business day after it, i.e. once 10 full business days have passed, and
    no later than the end (23:59:59) of the 14th."""
    tz = ZoneInfo(tz_name or settings.AULA_DMCA_TIMEZONE)
    received = received_at.astimezone(tz).date()
    first = business_day_after(received, RESTORE_AFTER_BUSINESS_DAYS + 1)
    last = business_day_after(received, RESTORE_WITHIN_BUSINESS_DAYS)
    not_before = dt.datetime.combine(first, dt.time.min, tzinfo=tz)
    restore_by = dt.datetime.combine(last, dt.time(23, 59, 59), tzinfo=tz)
    return not_before.astimezone(dt.UTC), restore_by.astimezone(dt.UTC)


# --- audit -------------------------------------------------------------------------------------------

def _audit(case: DmcaCase, action: str, *, actor=None, reason: str = "", data: dict | None = None) -> None:
    """One step of a case on its channel's ledger. `data` holds ids, kinds and dates, never contact details."""
    audit_record(ledger=case.ledger, stage=STAGE, action=action, target_type=CASE, target_id=case.pk, actor=actor,
                 reason=reason, rule="17 USC 512", data={"material_type": case.material_type,
                                                         "material_id": case.material_id, **(data or {})})


def _queue_email(kind: str, notice_id: int) -> None:
    from moderation import dmca_tasks

    transaction.on_commit(lambda: dmca_tasks.dmca_email_send.apply_async(args=[kind, notice_id], queue="bulk"))


# --- notices -----------------------------------------------------------------------------------------

def notice_receive(*, data: NoticeInput, now: dt.datetime | None = None) -> DmcaCase:
    """Take a notice of claimed infringement. Incomplete: Incomplete is raised and the refusal is audited
    (which elements were missing, nothing personal); no case, nothing disabled. Complete: the material is
    disabled, the uploader gets a strike and (on commit) an email; returns the case."""
    now = now or timezone.now()
    material = material_resolve(data.material_url)
    missing = _missing(data, NOTICE_ELEMENTS)
    if data.material_url.strip() and material is None:
        missing.append(("material_url", MATERIAL_NOT_FOUND))
    if data.complainant_email.strip():
        try:
            validate_email(data.complainant_email.strip())
        except ValidationError:
            missing.append(("complainant_email", EMAIL_INVALID))
    if missing:
        with transaction.atomic():
            audit_record(ledger=ledger_for(channel_id=material.channel_id) if material else PLATFORM, stage=STAGE,
                         action="notice_rejected", target_type=material.type if material else "dmca_notice",
                         target_id=material.id if material else "-", rule="17 USC 512(c)(3)",
                         reason="incomplete notice", data={"missing": sorted({name for name, _ in missing})})
        raise Incomplete(missing)
    try:
        return _notice_accept(data, material, now)
    except IntegrityError:  # a concurrent notice opened the material's case first: join it
        return _notice_accept(data, material, now)


def _notice_accept(data: NoticeInput, material: Material, now: dt.datetime) -> DmcaCase:
    values = {f.name: (v.strip() if isinstance(v := getattr(data, f.name), str) else v) for f in fields(data)}
    with transaction.atomic():
        # Lock order everywhere: the case, then the material.
        case = (DmcaCase.objects.select_for_update()
                .filter(material_type=material.type, material_id=material.id)
                .exclude(status=DmcaCase.Status.RESTORED).first())
        joined = case is not None
        if case is None:
            with transaction.atomic():  # a savepoint: the unique constraint may refuse a concurrent twin
                case = DmcaCase.objects.create(
                    material_type=material.type, material_id=material.id, material_title=material.title,
                    channel_id=material.channel_id, uploader_id=material.uploader_id,
                    ledger=ledger_for(channel_id=material.channel_id), created_at=now, disabled_at=now)
        notice = DmcaNotice.objects.create(case=case, received_at=now, **values)
        _audit(case, "notice_received", data={"notice_id": notice.pk, "joined_open_case": joined})
        _queue_email("notice", notice.pk)
        if joined:
            if case.status == DmcaCase.Status.COUNTER:
                _queue_email("counter", notice.pk)  # this claimant, too, may go to court in time
            return case
        MATERIALS[material.type].disable(material.id, case, now)
        _audit(case, "material_disabled", data={"disabled_at": now.isoformat()})
        if case.uploader_id:
            _strike_record(case, now)
    return case


# --- strikes and termination -------------------------------------------------------------------------

def _strike_record(case: DmcaCase, now: dt.datetime) -> DmcaStrike:
    strike = DmcaStrike.objects.create(user_id=case.uploader_id, case=case, created_at=now,
                                       expires_at=now + dt.timedelta(days=settings.AULA_DMCA_STRIKE_DAYS))
    active = selectors.active_strike_count(case.uploader_id, now=now)
    _audit(case, "strike_recorded", data={"strike_id": strike.pk, "user_id": case.uploader_id,
                                          "active_strikes": active, "expires_at": strike.expires_at.isoformat()})
    if active >= settings.AULA_DMCA_TERMINATION_STRIKES:
        # Repeat-infringer policy (§512(i)(1)(A)), through the account's own service (auditlog records it too).
        from classrooms.services import user_terminate

        if user_terminate(user_id=case.uploader_id):
            _audit(case, "account_terminated", reason="repeat infringer",
                   data={"user_id": case.uploader_id, "active_strikes": active,
                         "threshold": settings.AULA_DMCA_TERMINATION_STRIKES})
    return strike


def _strike_remove(case: DmcaCase, now: dt.datetime, reason: str) -> None:
    strike = DmcaStrike.objects.select_for_update().filter(case=case, removed_at__isnull=True).first()
    if strike is None:
        return
    strike.removed_at, strike.removed_reason = now, reason
    strike.save(update_fields=["removed_at", "removed_reason"])
    _audit(case, "strike_removed", reason=reason, data={"strike_id": strike.pk, "user_id": strike.user_id})


# --- counter-notice ----------------------------------------------------------------------------------

def counter_notice_submit(*, case_id: int, user, data: CounterInput, now: dt.datetime | None = None) -> DmcaCase:
    """The uploader's counter-notice: forwarded to every claimant (on commit) and restoration scheduled for
    restore_not_before (restore_window). Incomplete: Incomplete is raised and the refusal audited."""
    now = now or timezone.now()
    missing = _missing(data, COUNTER_ELEMENTS)
    with transaction.atomic():
        case = DmcaCase.objects.select_for_update().filter(pk=case_id).first()
        if case is None or not selectors.can_counter_notice(user, case):
            raise PermissionDenied("Only the uploader can answer this case.")
        if case.status != DmcaCase.Status.DISABLED:
            raise Conflict("This case already has a counter-notice.")
        if missing:
            _audit(case, "counter_notice_rejected", actor=user, reason="incomplete counter-notice",
                   data={"missing": [name for name, _ in missing]})
    if missing:  # the refusal is committed; the exception is raised outside the transaction
        raise Incomplete(missing)
    values = {f.name: (v.strip() if isinstance(v := getattr(data, f.name), str) else v) for f in fields(data)}
    with transaction.atomic():
        case = DmcaCase.objects.select_for_update().get(pk=case_id)
        if case.status != DmcaCase.Status.DISABLED:
            raise Conflict("This case already has a counter-notice.")
        counter = DmcaCounterNotice.objects.create(case=case, submitted_by=user, received_at=now, **values)
        case.restore_not_before, case.restore_by = restore_window(now)
        case.status, case.counter_received_at = DmcaCase.Status.COUNTER, now
        case.save(update_fields=["status", "counter_received_at", "restore_not_before", "restore_by"])
        _audit(case, "counter_notice_received", actor=user, data={"counter_notice_id": counter.pk})
        _audit(case, "restore_scheduled", data={"restore_not_before": case.restore_not_before.isoformat(),
                                                "restore_by": case.restore_by.isoformat(),
                                                "time_zone": settings.AULA_DMCA_TIMEZONE})
        for notice_id in case.notices.values_list("pk", flat=True):
            _queue_email("counter", notice_id)
    return case


def court_action_report(*, case_id: int, actor, note: str = "", now: dt.datetime | None = None) -> DmcaCase:
    """Staff record that the claimant told the agent of a court action: the material is not restored."""
    now = now or timezone.now()
    if not selectors.can_manage_cases(actor):
        raise PermissionDenied("Only platform staff record court actions.")
    with transaction.atomic():
        case = DmcaCase.objects.select_for_update().filter(pk=case_id).first()
        if case is None:
            raise DmcaCase.DoesNotExist
        if case.status != DmcaCase.Status.COUNTER:
            raise Conflict("A court action can only be recorded while restoration is pending.")
        case.status, case.court_action_at, case.court_action_by = DmcaCase.Status.COURT, now, actor
        case.court_action_note = note.strip()[:500]
        case.save(update_fields=["status", "court_action_at", "court_action_by", "court_action_note"])
        _audit(case, "court_action_reported", actor=actor, reason=case.court_action_note,
               data={"late": now > case.restore_by})
    return case


# --- restoration -------------------------------------------------------------------------------------

def dmca_restore_due(*, now: dt.datetime | None = None, batch: int = SWEEP_BATCH) -> list[int]:
    """Restore every case whose restore_not_before has come (the sweeper). Safe to run twice and in
    parallel: each run takes the due cases no other run holds (skip locked) and a restored case is no
    longer due. Returns the ids of the cases it restored."""
    now = now or timezone.now()
    restored: list[int] = []
    while True:
        with transaction.atomic():
            due = list(DmcaCase.objects.select_for_update(skip_locked=True)
                       .filter(status=DmcaCase.Status.COUNTER, restore_not_before__lte=now)
                       .order_by("restore_not_before", "pk")[:batch])
            for case in due:
                _restore(case, now)
                restored.append(case.pk)
        if len(due) < batch:
            return restored


def _restore(case: DmcaCase, now: dt.datetime) -> None:
    found = MATERIALS[case.material_type].restore(case.material_id, case, now)
    case.status, case.restored_at = DmcaCase.Status.RESTORED, now
    case.save(update_fields=["status", "restored_at"])
    late = case.restore_by is not None and now > case.restore_by
    if late:
        logger.warning("DMCA case %s restored after its restore_by deadline", case.pk)
    _audit(case, "material_restored", data={"restored_at": now.isoformat(), "late": late, "material_found": found})
    _strike_remove(case, now, "Material restored after a counter-notice")


# --- email -------------------------------------------------------------------------------------------

def _notice_email(notice: DmcaNotice) -> tuple[str, str, list[str]]:
    case = notice.case
    uploader = case.uploader
    base = settings.AULA_PUBLIC_URL
    body = (
        f"We received a copyright infringement notice (DMCA case #{case.pk}) about your "
        f"{case.get_material_type_display().lower()} \"{case.material_title}\". Access to it has been disabled.\n\n"
        f"The notice\n----------\n"
        f"Copyrighted work: {notice.copyrighted_work}\n"
        f"Material: {notice.material_url}\n"
        + (f"Details: {notice.description}\n" if notice.description else "")
        + f"Complainant: {notice.complainant_name} <{notice.complainant_email}>\n"
        f"Signed: {notice.signature}\n"
        f"Statements: good-faith belief that the use is not authorized; accurate and, under penalty of perjury, "
        f"authorized to act for the owner.\n\n"
        f"A strike was recorded on your account. If you believe the material was removed by mistake or "
        f"misidentification you can send a counter-notice: {base}{reverse('moderation:dmca-counter', args=[case.pk])}"
        f"\n\nCase page: {base}{reverse('moderation:dmca-case', args=[case.pk])}\n"
    )
    return f"Copyright notice: \"{case.material_title}\" was disabled", body, [uploader.email] if uploader else []


def _counter_email(notice: DmcaNotice) -> tuple[str, str, list[str]]:
    case, counter = notice.case, notice.case.counter_notice
    tz = ZoneInfo(settings.AULA_DMCA_TIMEZONE)
    when = case.restore_not_before.astimezone(tz).strftime("%A %d %B %Y, %H:%M %Z")
    body = (
        f"The uploader sent a counter-notice in DMCA case #{case.pk} (your notice about {notice.material_url}).\n\n"
        f"The counter-notice\n------------------\n"
        f"Material: {counter.material_identification}\n"
        f"Location before removal: {counter.material_location}\n"
        f"Name: {counter.name}\nAddress: {counter.address}\nTelephone: {counter.phone}\n"
        f"Signed: {counter.signature}\n"
        f"Statements: under penalty of perjury, a good-faith belief that the material was removed by mistake or "
        f"misidentification; consent to the jurisdiction of the Federal District Court for their address's "
        f"district (or any district where Aula may be found, outside the United States); will accept service of "
        f"process from you or your agent.\n\n"
        f"We will restore the material on {when} (10 business days after receipt) unless our designated agent "
        f"first receives notice that you have filed an action seeking a court order to restrain the uploader "
        f"from infringing activity relating to the material. Send it to {settings.AULA_DMCA_AGENT_EMAIL}.\n"
    )
    return f"DMCA case #{case.pk}: counter-notice received", body, [notice.complainant_email]


EMAILS = {
    # kind: (builder, the notice's field marking it sent, the audited step)
    "notice": (_notice_email, "uploader_notified_at", "uploader_notified"),
    "counter": (_counter_email, "counter_forwarded_at", "counter_notice_forwarded"),
}


def dmca_email_deliver(*, kind: str, notice_id: int, now: dt.datetime | None = None) -> str:
    """Send one case email (idempotent: an email marked sent is never sent again). SMTP errors propagate:
    the task retries the transient ones."""
    build, marker, step = EMAILS[kind]
    with transaction.atomic():
        notice = (DmcaNotice.objects.select_for_update(of=("self",)).select_related("case__uploader")
                  .filter(pk=notice_id).first())
        if notice is None:
            return "missing"
        if getattr(notice, marker) is not None:
            return "already sent"
        subject, body, to = build(notice)
        to = [address for address in to if address]
        if to:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to, fail_silently=False)
        setattr(notice, marker, now or timezone.now())
        notice.save(update_fields=[marker])
        _audit(notice.case, step if to else f"{step}_no_address", data={"notice_id": notice.pk})
        return "sent" if to else "no address"
