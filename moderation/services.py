"""Moderation writes: verdicts into the queue, reports, claims, decisions, sanctions, appeals, escalation.

Every function here is the one write path its action has (the queue page, its socket, the admin and the
Celery beat sweeper call the same functions). Each runs in a transaction, locks the item it changes, refuses
a stale version (two moderators never decide one item twice), records an audit entry in the same
transaction, and publishes a queue event after commit.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.realtime.transport import room_signal_publish
from moderation import content, realtime, selectors
from moderation.audit import audit_record, ledger_for
from moderation.models import Action, Category, ModerationItem, Sanction, UserReport
from moderation.pipeline import Context, Verdict

Decision = ModerationItem.Decision
MAX_TIMEOUT_MINUTES = 60 * 24 * 30


class Stale(Exception):
    """The item changed since the reviewer read it (claimed or decided by someone else): reload."""


# --- queue events -----------------------------------------------------------------------------------------

def _groups(item: ModerationItem) -> list[str]:
    groups = [realtime.queue_platform(), realtime.queue_legal()]
    if item.channel_id:
        groups.append(realtime.queue_streams())
    if item.course_id:
        groups.append(realtime.queue_course(item.course_id))
    if item.institution_id:
        groups.append(realtime.queue_school(item.institution_id))
        from classrooms.models import Institution

        district_id = Institution.objects.filter(pk=item.institution_id).values_list("district_id", flat=True).first()
        if district_id:
            groups.append(realtime.queue_district(district_id))
    if item.channel_id:
        groups.append(realtime.queue_channel(item.channel_id))
    return groups


def _publish(item: ModerationItem, change: str) -> None:
    """After commit: {change, id, version, status, tier} to every group that may review it (no text)."""
    data = {"change": change, "id": item.pk, "version": item.version, "status": item.status, "tier": item.tier,
            "assigned_to": item.assigned_to_id, "priority": item.priority}
    for group in _groups(item):
        room_signal_publish(group, "queue.item", data)


def _audit(item: ModerationItem, *, stage: str, action: str, actor=None, reason: str = "", rule: str = "",
           category: str = "", **data) -> None:
    audit_record(ledger=ledger_for(institution_id=item.institution_id, channel_id=item.channel_id), stage=stage,
                 action=action, target_type=item.source, target_id=item.object_id, actor=actor,
                 category=category or item.category, reason=reason, rule=rule,
                 data={"item": item.pk, "tier": item.tier, **data})


# --- verdicts from the pipeline -------------------------------------------------------------------------------

def _sla(minors: bool, severity: int) -> dt.timedelta:
    if minors:
        return dt.timedelta(seconds=settings.AULA_MODERATION_SLA_MINORS_SECONDS)
    if severity >= 80:
        return dt.timedelta(seconds=settings.AULA_MODERATION_SLA_HIGH_SECONDS)
    return dt.timedelta(seconds=settings.AULA_MODERATION_SLA_NORMAL_SECONDS)


def priority_of(*, severity: int, minors: bool, visible: bool, report_count: int, reporter_accuracy: float) -> int:
    """Higher first. A live class of minors outranks everything; then severity; content others can see now
    outranks held content (nobody sees that yet); reports count by their reporters' track record. Within one
    priority the queue is oldest first."""
    reports = min(report_count, 10) * 10 * reporter_accuracy
    return int((300 if minors else 0) + severity + (50 if visible else 0) + reports)


def _rule_label(verdict: Verdict) -> str:
    if verdict.hits:
        return ",".join(f"{h['name']}#{h['rule']}" for h in verdict.hits)[:120]
    return verdict.model


def verdict_record(*, verdict: Verdict, ctx: Context, object_id, author_id: int | None,
                   text: str) -> ModerationItem | None:
    """Audit what the pipeline did to a stored piece of content and queue it when a person must look.
    Runs in the caller's transaction, after the content row is written (its id is the item's target).
    Without an author (an anonymous poll answer) it is audited only: a queue item would name the author."""
    if verdict.action == Action.ALLOW and not verdict.notify:
        return None
    object_id = str(object_id)
    ledger = ledger_for(institution_id=ctx.institution_id, channel_id=ctx.channel_id)
    stage = "patterns" if verdict.category == Category.PATTERN else "classifier" if verdict.scores else "pipeline"
    audit_record(ledger=ledger, stage=stage, action=verdict.action, target_type=ctx.source, target_id=object_id,
                 category=verdict.category, rule=_rule_label(verdict),
                 reason="fail-closed: classifier unavailable" if verdict.fail_closed_hold else "",
                 data={"scores": verdict.scores, "hits": verdict.hits, "degraded": verdict.degraded,
                       "author": author_id, "model": verdict.model})
    if not verdict.queued or author_id is None:
        return None
    visible = verdict.visible
    reason = ModerationItem.Reason.FLAGGED if visible else ModerationItem.Reason.HELD
    now = timezone.now()
    item = ModerationItem(
        institution_id=ctx.institution_id, course_id=ctx.course_id, channel_id=ctx.channel_id, source=ctx.source,
        object_id=object_id, room_id=ctx.room_id, author_id=author_id, text=text[:4000],
        category=verdict.category or Category.PATTERN, scores=verdict.scores, matches=verdict.hits, reason=reason,
        visible=visible, minors=ctx.minors, severity=verdict.severity,
        priority=priority_of(severity=verdict.severity, minors=ctx.minors, visible=visible, report_count=0,
                             reporter_accuracy=0),
        due_at=now + _sla(ctx.minors, verdict.severity))
    with transaction.atomic():
        item.save(force_insert=True)
    _publish(item, "new")
    return item


def block_record(*, verdict: Verdict, ctx: Context, author_id: int) -> None:
    """A blocked message is never stored: only the audit entry says it happened (and why)."""
    audit_record(ledger=ledger_for(institution_id=ctx.institution_id, channel_id=ctx.channel_id),
                 stage="patterns" if verdict.category == Category.PATTERN else "classifier", action=Action.BLOCK,
                 target_type="user", target_id=author_id, category=verdict.category, rule=_rule_label(verdict),
                 data={"source": ctx.source, "room": ctx.room_id, "scores": verdict.scores, "hits": verdict.hits})


# --- user reports -------------------------------------------------------------------------------------------

def report_create(*, reporter, source: str, object_id, reason: str = "", room_id: int | None = None) -> ModerationItem:
    """"Flag this message": joins the content's open item (or opens one). One report per person and item.
    `room_id` (a socket's own session or stream): the message must be in that room."""
    ref = content.resolve(source, str(object_id), reporter)
    if ref is None or not ref.visible or (room_id is not None and ref.ctx.room_id != room_id):
        raise PermissionDenied("There is no such message to report.")
    if ref.author_id == reporter.pk:
        raise ValidationError("You cannot report your own message.")
    accuracy = selectors.reporter_accuracy(reporter.pk)
    ctx = ref.ctx
    with transaction.atomic():
        item = (ModerationItem.objects.select_for_update()
                .filter(source=source, object_id=ref.object_id).exclude(status=ModerationItem.Status.DECIDED).first())
        if item is None:
            # A teacher already found it acceptable in context: the report is kept, the item is not reopened.
            settled = ModerationItem.objects.filter(source=source, object_id=ref.object_id,
                                                    decision=Decision.CONTEXT).order_by("-decided_at").first()
            if settled is not None:
                UserReport.objects.get_or_create(item=settled, reporter=reporter,
                                                 defaults={"reason": reason[:300],
                                                           "outcome": UserReport.Outcome.DISMISSED})
                return settled
            now = timezone.now()
            try:
                with transaction.atomic():
                    item = ModerationItem.objects.create(
                        institution_id=ctx.institution_id, course_id=ctx.course_id, channel_id=ctx.channel_id,
                        source=source, object_id=ref.object_id, room_id=ctx.room_id, author_id=ref.author_id,
                        text=ref.text[:4000], category=Category.REPORT, reason=ModerationItem.Reason.REPORTED,
                        visible=True, minors=ctx.minors, severity=30, due_at=now + _sla(ctx.minors, 30))
                change = "new"
            except IntegrityError:  # another first report at the same instant opened it: join that one
                item = (ModerationItem.objects.select_for_update().filter(source=source, object_id=ref.object_id)
                        .exclude(status=ModerationItem.Status.DECIDED).get())
                change = "updated"
        else:
            change = "updated"
        try:
            with transaction.atomic():
                UserReport.objects.create(item=item, reporter=reporter, reason=reason[:300])
        except IntegrityError:
            return item  # reported twice by the same person: once is enough
        item.report_count += 1
        item.reporter_accuracy = max(item.reporter_accuracy, accuracy)
        item.priority = priority_of(severity=item.severity, minors=item.minors, visible=item.visible,
                                    report_count=item.report_count, reporter_accuracy=item.reporter_accuracy)
        item.version += 1
        item.save(update_fields=["report_count", "reporter_accuracy", "priority", "version"])
        _audit(item, stage="report", action="report", actor=reporter, reason=reason[:200],
               reports=item.report_count, accuracy=round(accuracy, 3))
        _publish(item, change)
    return item


# --- claims and decisions -----------------------------------------------------------------------------------

def open_item_id(source: str, object_id) -> int | None:
    return (ModerationItem.objects.filter(source=source, object_id=str(object_id))
            .exclude(status=ModerationItem.Status.DECIDED).values_list("pk", flat=True).first())


def item_settle(*, item_id: int, decision: str, note: str) -> ModerationItem | None:
    """The system decided (an admin action already authorised, a task): the item is closed as decided,
    audited with no actor. The content was already handled by the caller."""
    with transaction.atomic():
        item = ModerationItem.objects.select_for_update().filter(pk=item_id).first()
        if item is None or item.status == ModerationItem.Status.DECIDED:
            return item
        item.status, item.decision, item.decision_note = ModerationItem.Status.DECIDED, decision, note[:500]
        item.decided_at, item.visible = timezone.now(), decision in (Decision.APPROVE, Decision.CONTEXT)
        item.version += 1
        item.save()
        _audit(item, stage="system", action=f"decide.{decision}", reason=note[:200])
        _publish(item, "decided")
    return item


def _locked_item(item_id: int, actor, version: int | None) -> ModerationItem:
    item = ModerationItem.objects.select_for_update().filter(pk=item_id).first()
    if item is None or not selectors.items_for(actor).filter(pk=item_id).exists():
        raise PermissionDenied("No such item in your queue.")
    if version is not None and item.version != int(version):
        raise Stale("This item changed since you loaded it.")
    if item.author_id == actor.pk:
        raise PermissionDenied("You cannot review your own content: another moderator will.")
    return item


def item_claim(*, item_id: int, actor, version: int | None = None) -> ModerationItem:
    """Take an item to review it; others see it claimed live. Claiming a claimed item is refused (Stale)."""
    with transaction.atomic():
        item = _locked_item(item_id, actor, version)
        if item.status == ModerationItem.Status.DECIDED:
            raise Stale("This item has already been decided.")
        if item.status == ModerationItem.Status.CLAIMED and item.assigned_to_id != actor.pk:
            raise Stale("Someone else is reviewing this item.")
        item.status, item.assigned_to, item.claimed_at = ModerationItem.Status.CLAIMED, actor, timezone.now()
        item.version += 1
        item.save(update_fields=["status", "assigned_to", "claimed_at", "version"])
        _audit(item, stage="human", action="claim", actor=actor)
        _publish(item, "claimed")
    return item


def item_assign(*, item_id: int, actor, assignee_email: str, version: int | None = None) -> ModerationItem:
    """A reviewer hands an open item to a named colleague who may review it too (claimed in their name)."""
    from django.contrib.auth import get_user_model

    assignee = get_user_model().objects.filter(email__iexact=(assignee_email or "").strip(), is_active=True).first()
    with transaction.atomic():
        item = _locked_item(item_id, actor, version)
        if assignee is None or not selectors.items_for(assignee).filter(pk=item_id).exists():
            raise ValidationError("That person cannot review this item (not a reviewer at its tier).")
        if item.status == ModerationItem.Status.DECIDED:
            raise Stale("This item has already been decided.")
        if item.status == ModerationItem.Status.CLAIMED and item.assigned_to_id not in (actor.pk, assignee.pk):
            raise Stale("Someone else is reviewing this item.")
        item.status, item.assigned_to, item.claimed_at = ModerationItem.Status.CLAIMED, assignee, timezone.now()
        item.version += 1
        item.save(update_fields=["status", "assigned_to", "claimed_at", "version"])
        _audit(item, stage="human", action="assign", actor=actor, assignee=assignee.pk)
        _publish(item, "claimed")
    return item


def item_release(*, item_id: int, actor, version: int | None = None) -> ModerationItem:
    with transaction.atomic():
        item = _locked_item(item_id, actor, version)
        if item.status != ModerationItem.Status.CLAIMED:
            return item
        if item.assigned_to_id != actor.pk and not actor.is_superuser:
            raise PermissionDenied("Only the reviewer who claimed it can release it.")
        item.status, item.assigned_to, item.claimed_at = ModerationItem.Status.OPEN, None, None
        item.version += 1
        item.save(update_fields=["status", "assigned_to", "claimed_at", "version"])
        _audit(item, stage="human", action="release", actor=actor)
        _publish(item, "released")
    return item


def _ref(item: ModerationItem):
    ctx = Context(source=item.source, institution_id=item.institution_id, course_id=item.course_id,
                  channel_id=item.channel_id, room_id=item.room_id, author_id=item.author_id, minors=item.minors)
    return content.ContentRef(item.source, item.object_id, ctx, item.author_id, item.text, item.visible)


def _sanction_scope(item: ModerationItem, scope: str | None, actor) -> str:
    allowed = [Sanction.Scope.ROOM, Sanction.Scope.INSTITUTION] if item.institution_id else \
        [Sanction.Scope.ROOM, Sanction.Scope.CHANNEL]
    scope = scope or Sanction.Scope.ROOM
    if scope not in allowed:
        raise ValidationError(f"A sanction here applies to: {', '.join(allowed)}.")
    if item.institution_id and not item.course_id:
        scope = Sanction.Scope.INSTITUTION  # no room to scope it to (a display name): the school's
    if scope == Sanction.Scope.INSTITUTION:
        from classrooms.selectors import is_school_staff

        if not is_school_staff(actor, item.institution_id):
            raise PermissionDenied("A school-wide sanction is for the school's staff.")
    return scope


def item_decide(*, item_id: int, actor, decision: str, note: str = "", version: int | None = None,
                minutes: int | None = None, scope: str | None = None) -> ModerationItem:
    """Decide an item once. approve/context: the content is shown (a held message goes out now); remove:
    hidden from everyone; censor: shown with its matched words masked; warn/timeout/ban: removed, and a
    sanction on the author (a timeout lasts `minutes`; a ban has no end) in `scope`. The author is told."""
    if decision not in Decision.values:
        raise ValidationError(f"Unknown decision {decision!r}.")
    if decision == Decision.TIMEOUT and not (minutes and 0 < int(minutes) <= MAX_TIMEOUT_MINUTES):
        raise ValidationError(f"A timeout needs a duration of 1 to {MAX_TIMEOUT_MINUTES} minutes.")
    if decision in (Decision.REMOVE, Decision.WARN, Decision.TIMEOUT, Decision.BAN) and not note.strip():
        raise ValidationError("Give a reason: the author is told it.")
    with transaction.atomic():
        item = _locked_item(item_id, actor, version)
        if item.status == ModerationItem.Status.DECIDED:
            raise Stale("This item has already been decided.")
        if item.status == ModerationItem.Status.CLAIMED and item.assigned_to_id not in (None, actor.pk):
            raise Stale("Someone else is reviewing this item.")
        if decision == Decision.CONTEXT and item.institution_id is None:
            raise ValidationError("Educational context applies to class content only.")
        ref = _ref(item)
        handler = content.adapter(item.source)
        now = timezone.now()
        sanction = None
        if decision in (Decision.APPROVE, Decision.CONTEXT):
            handler.approve(item.object_id, actor)
            item.visible = True
        elif decision == Decision.CENSOR:
            from moderation import patterns

            lists = patterns.load_lists(institution_id=item.institution_id, course_id=item.course_id,
                                        channel_id=item.channel_id, fresh=True)
            masked, count = patterns.censor(item.text, lists)
            if not count:
                masked = "".join("*" if ch.isalnum() else ch for ch in item.text)
            handler.censor(item.object_id, actor, masked)
            item.visible = True
        else:
            handler.remove(item.object_id, actor, note.strip())
            item.visible = False
            if decision in (Decision.WARN, Decision.TIMEOUT, Decision.BAN):
                scope = _sanction_scope(item, scope, actor)
                until = now + dt.timedelta(minutes=int(minutes)) if decision == Decision.TIMEOUT else None
                sanction = Sanction.objects.create(
                    user_id=item.author_id, kind=decision, scope=scope, institution_id=item.institution_id,
                    course_id=item.course_id if scope == Sanction.Scope.ROOM else None, channel_id=item.channel_id,
                    item=item, reason=note.strip()[:500], issued_by=actor, expires_at=until)
                if decision != Decision.WARN:
                    handler.restrict(user_id=item.author_id, ref=ref, scope=scope, until=until, actor=actor,
                                     reason=note.strip()[:200])
        item.status, item.decision, item.decision_note = ModerationItem.Status.DECIDED, decision, note.strip()[:500]
        item.decided_by, item.decided_at, item.assigned_to = actor, now, item.assigned_to or actor
        item.version += 1
        item.save()
        upheld = decision not in (Decision.APPROVE, Decision.CONTEXT)
        item.reports.filter(outcome=UserReport.Outcome.PENDING).update(
            outcome=UserReport.Outcome.UPHELD if upheld else UserReport.Outcome.DISMISSED)
        _audit(item, stage="human", action=f"decide.{decision}", actor=actor, reason=note[:200],
               sanction=sanction.pk if sanction else None, minutes=minutes, scope=scope)
        handler.notify_author(ref, "moderation.decision", {
            "item": item.pk, "decision": decision, "reason": item.decision_note if upheld else "",
            "until": sanction.expires_at.isoformat() if sanction and sanction.expires_at else None,
            "appeal": upheld})
        _publish(item, "decided")
    return item


def escalate(*, item_id: int, actor=None, reason: str = "", now: dt.datetime | None = None,
             version: int | None = None) -> ModerationItem | None:
    """Move an item up one tier (by a reviewer, or by the SLA sweeper with actor None), with a new SLA,
    unassigned, and the next tier told. The legal tier is the last: past it the item stays and is re-notified."""
    now = now or timezone.now()
    with transaction.atomic():
        if actor is not None:
            item = _locked_item(item_id, actor, version)
        else:
            item = ModerationItem.objects.select_for_update(skip_locked=True).filter(pk=item_id).first()
            if item is None or item.due_at > now:
                return None  # another sweeper has it, or it was already moved on
        if item.status == ModerationItem.Status.DECIDED:
            return None
        before = item.tier
        # A message held only by a stream's own settings (hold-all, lockdown) is the channel's business: it
        # stops at the owner. At the legal tier an open item is re-notified once a day, not every SLA.
        top = ModerationItem.Tier.OWNER if item.category == Category.ROOM_RULE else ModerationItem.Tier.LEGAL
        if actor is None and before >= top:
            item.due_at = now + dt.timedelta(days=1)
            item.save(update_fields=["due_at"])
            if before == ModerationItem.Tier.LEGAL:
                item_pk = item.pk
                from moderation.tasks import tier_notify

                transaction.on_commit(lambda: tier_notify.delay(item_pk))
            return item
        item.tier = min(item.tier + 1, top)
        item.status, item.assigned_to, item.claimed_at = ModerationItem.Status.OPEN, None, None
        item.escalated_at, item.due_at = now, now + _sla(item.minors, item.severity)
        item.version += 1
        item.save(update_fields=["tier", "status", "assigned_to", "claimed_at", "escalated_at", "due_at", "version"])
        _audit(item, stage="escalation" if actor is None else "human", action="escalate", actor=actor,
               reason=reason or ("SLA expired" if actor is None else ""), tier_from=before)
        _publish(item, "escalated")
        from moderation.tasks import tier_notify

        item_pk = item.pk
        transaction.on_commit(lambda: tier_notify.delay(item_pk))
    return item


def escalate_overdue(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """The SLA sweeper (Celery beat): every open item past its due time moves up one tier. Database-driven,
    safe to run twice or in parallel (rows are locked with SKIP LOCKED, and re-checked under the lock)."""
    now = now or timezone.now()
    due = list(ModerationItem.objects.exclude(status=ModerationItem.Status.DECIDED)
               .filter(due_at__lte=now).order_by("due_at").values_list("pk", flat=True)[:limit])
    return sum(1 for pk in due if escalate(item_id=pk, now=now) is not None)


# --- sanctions and appeals ----------------------------------------------------------------------------------

def sanction_revoke(*, sanction_id: int, actor, reason: str) -> Sanction:
    """Lift a sanction early (reversal, or an appeal overturned it). Audited; the author is told."""
    if not reason.strip():
        raise ValidationError("Give a reason for lifting the sanction.")
    with transaction.atomic():
        sanction = Sanction.objects.select_for_update().filter(pk=sanction_id).first()
        if sanction is None or sanction.item_id is None or not selectors.can_review(actor, sanction.item):
            raise PermissionDenied("No such sanction in your scope.")
        if sanction.revoked_at is not None:
            return sanction
        sanction.revoked_at, sanction.revoked_by, sanction.revoke_reason = timezone.now(), actor, reason.strip()[:500]
        sanction.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
        item = sanction.item
        ref = _ref(item)
        if sanction.kind != Sanction.Kind.WARN:
            content.adapter(item.source).unrestrict(user_id=sanction.user_id, ref=ref, scope=sanction.scope,
                                                    actor=actor)
        _audit(item, stage="human", action="sanction.revoke", actor=actor, reason=reason[:200], sanction=sanction.pk)
        content.adapter(item.source).notify_author(ref, "moderation.sanction_lifted", {"sanction": sanction.pk})
    return sanction


def _shown_form(item: ModerationItem) -> str:
    """The text as the pipeline let it be shown: masked again when a censoring list had masked it."""
    if not any(isinstance(h, dict) and h.get("action") == Action.CENSOR for h in item.matches or []):
        return item.text
    from moderation import patterns

    lists = patterns.load_lists(institution_id=item.institution_id, course_id=item.course_id,
                                channel_id=item.channel_id, fresh=True)
    return patterns.censor(item.text, lists)[0]


def decision_reverse(*, item_id: int, actor, reason: str) -> ModerationItem:
    """Undo a decision: removed or masked content is shown as sent again, approved content is removed,
    sanctions are lifted. The item stays decided (its history is in the audit trail)."""
    if not reason.strip():
        raise ValidationError("Give a reason for reversing the decision.")
    with transaction.atomic():
        item = _locked_item(item_id, actor, None)
        if item.status != ModerationItem.Status.DECIDED:
            raise ValidationError("Only a decided item can be reversed.")
        if item.reversed_at is not None:
            raise Stale("This decision has already been reversed.")
        handler, ref = content.adapter(item.source), _ref(item)
        if item.decision in (Decision.APPROVE, Decision.CONTEXT):
            handler.remove(item.object_id, actor, reason.strip())
            item.visible = False
        else:
            handler.restore(item.object_id, actor, _shown_form(item))
            item.visible = True
            for sanction in item.sanctions.filter(revoked_at__isnull=True):
                sanction.revoked_at, sanction.revoked_by = timezone.now(), actor
                sanction.revoke_reason = f"decision reversed: {reason.strip()}"[:500]
                sanction.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
                if sanction.kind != Sanction.Kind.WARN:
                    handler.unrestrict(user_id=sanction.user_id, ref=ref, scope=sanction.scope, actor=actor)
        item.version, item.reversed_at = item.version + 1, timezone.now()
        item.save(update_fields=["visible", "version", "reversed_at"])
        _audit(item, stage="human", action="reverse", actor=actor, reason=reason[:200], previous=item.decision)
        handler.notify_author(ref, "moderation.reversed", {"item": item.pk})
        _publish(item, "reversed")
    return item


def appeal_file(*, item_id: int, appellant, statement: str):
    """The author appeals a decision against their content (once per item)."""
    from moderation.models import Appeal

    statement = (statement or "").strip()
    if not statement:
        raise ValidationError("Say why the decision should be looked at again.")
    with transaction.atomic():
        item = ModerationItem.objects.select_for_update().filter(pk=item_id, author=appellant).first()
        if item is None or item.status != ModerationItem.Status.DECIDED or item.reversed_at is not None or \
                item.decision in (Decision.APPROVE, Decision.CONTEXT):
            raise PermissionDenied("There is no decision against your content to appeal here.")
        if Appeal.objects.filter(item=item, appellant=appellant).exists():
            raise ValidationError("You have already appealed this decision.")
        appeal = Appeal.objects.create(item=item, appellant=appellant, statement=statement[:2000],
                                       sanction=item.sanctions.order_by("-created_at").first())
        _audit(item, stage="appeal", action="appeal.file", actor=appellant, appeal=appeal.pk)
        item.version += 1
        item.save(update_fields=["version"])
        _publish(item, "appealed")
    return appeal


def appeal_decide(*, appeal_id: int, actor, overturn: bool, note: str):
    """A different moderator than the one who decided reviews the appeal; overturning reverses the decision."""
    from moderation.models import Appeal

    if not note.strip():
        raise ValidationError("Give the reason for the appeal's outcome: the author is told it.")
    with transaction.atomic():
        appeal = Appeal.objects.select_for_update().select_related("item").filter(pk=appeal_id).first()
        if appeal is None or not selectors.can_review(actor, appeal.item):
            raise PermissionDenied("No such appeal in your scope.")
        if appeal.status != Appeal.Status.OPEN:
            raise Stale("This appeal has already been decided.")
        if appeal.item.decided_by_id == actor.pk:
            raise PermissionDenied("An appeal is reviewed by a different moderator than the one who decided.")
        if appeal.appellant_id == actor.pk:
            raise PermissionDenied("You cannot decide your own appeal.")
        appeal.status = Appeal.Status.OVERTURNED if overturn else Appeal.Status.UPHELD
        appeal.decided_by, appeal.decided_at, appeal.note = actor, timezone.now(), note.strip()[:500]
        appeal.save(update_fields=["status", "decided_by", "decided_at", "note"])
        _audit(appeal.item, stage="appeal", action=f"appeal.{appeal.status}", actor=actor, reason=note[:200],
               appeal=appeal.pk)
        if overturn:
            decision_reverse(item_id=appeal.item_id, actor=actor, reason=f"appeal {appeal.pk} overturned")
        else:
            content.adapter(appeal.item.source).notify_author(_ref(appeal.item), "moderation.appeal",
                                                              {"appeal": appeal.pk, "status": appeal.status})
    return appeal

