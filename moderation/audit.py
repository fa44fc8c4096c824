"""The moderation audit trail: every automated and human action, append-only and hash-chained per ledger.

A ledger is one school's ("i<id>"), one channel's ("c<id>") or the platform's ("platform"): appends to one
ledger are ordered by a row lock on its head (AuditLedger), so two ledgers never wait for each other. Each
entry's hash covers the previous entry's hash and every field of its own, so an entry edited or removed by
someone who got around the database trigger (migration 0001) breaks the chain at that point; `verify`
finds it. Entries hold ids, categories, scores and rule names, never the text itself (that stays on the
queue item, which privacy erasure can delete).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator

from django.db import transaction
from django.utils import timezone

from config.exports import csv_writer
from moderation.models import AuditEntry, AuditLedger

GENESIS = "0" * 64
PLATFORM = "platform"
EXPORT_FIELDS = ["ledger", "index", "at", "actor_id", "stage", "action", "target_type", "target_id", "category",
                 "reason", "rule", "data", "prev_hash", "hash"]


def ledger_for(*, institution_id: int | None = None, channel_id: int | None = None) -> str:
    if institution_id:
        return f"i{institution_id}"
    if channel_id:
        return f"c{channel_id}"
    return PLATFORM


def _digest(prev: str, ledger: str, index: int, at: dt.datetime, actor_id, stage: str, action: str,
            target_type: str, target_id: str, category: str, reason: str, rule: str, data: dict) -> str:
    body = json.dumps([prev, ledger, index, at.isoformat(), actor_id, stage, action, target_type, target_id,
                       category, reason, rule, data], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def audit_record(*, ledger: str, stage: str, action: str, target_type: str, target_id, actor=None,
                 category: str = "", reason: str = "", rule: str = "", data: dict | None = None) -> AuditEntry:
    """Append one entry to `ledger`. Joins the caller's transaction (the entry commits with the action it
    records, or not at all)."""
    data = json.loads(json.dumps(data or {}, default=str))  # what is hashed is exactly what is stored
    actor_id = getattr(actor, "pk", actor)
    with transaction.atomic():
        AuditLedger.objects.get_or_create(key=ledger)
        head = AuditLedger.objects.select_for_update().get(key=ledger)
        prev, index, at = head.head or GENESIS, head.count, timezone.now()
        target_id, reason = str(target_id), (reason or "")[:500]
        digest = _digest(prev, ledger, index, at, actor_id, stage, action, target_type, target_id, category,
                         reason, rule[:120], data)
        entry = AuditEntry.objects.create(ledger=ledger, index=index, at=at, actor_id=actor_id, stage=stage,
                                          action=action, target_type=target_type, target_id=target_id,
                                          category=category, reason=reason, rule=rule[:120], data=data,
                                          prev_hash=prev, hash=digest)
        AuditLedger.objects.filter(key=ledger).update(head=digest, count=index + 1)
    return entry


def verify(ledger: str) -> tuple[bool, int | None]:
    """(True, None) when the ledger's chain is intact, else (False, index of the first entry that does not fit:
    changed, missing or out of order), checked against the head as well (a removed last entry)."""
    prev, expected = GENESIS, 0
    for e in AuditEntry.objects.filter(ledger=ledger).order_by("index").iterator(chunk_size=2000):
        if e.index != expected or e.prev_hash != prev or e.hash != _digest(
                prev, e.ledger, e.index, e.at, e.actor_id, e.stage, e.action, e.target_type, e.target_id,
                e.category, e.reason, e.rule, e.data):
            return False, expected
        prev, expected = e.hash, expected + 1
    head = AuditLedger.objects.filter(key=ledger).first()
    if head is not None and (head.count != expected or (head.head or GENESIS) != prev):
        return False, expected
    return True, None


def _row(e: AuditEntry) -> list:
    return [e.ledger, e.index, e.at.isoformat(), e.actor_id or "", e.stage, e.action, e.target_type, e.target_id,
            e.category, e.reason, e.rule, json.dumps(e.data, sort_keys=True), e.prev_hash, e.hash]


def export_csv(entries: Iterable[AuditEntry]) -> Iterator[str]:
    """CSV lines (header first) for a streaming response; with prev_hash and hash, so an auditor can re-check
    the chain offline. Through config/exports (cells a spreadsheet would run as a formula get a leading quote:
    strip it before re-hashing such a cell)."""
    buf = io.StringIO()
    writer = csv_writer(buf)
    writer.writerow(EXPORT_FIELDS)
    yield buf.getvalue()
    for e in entries:
        buf.seek(0)
        buf.truncate()
        writer.writerow(_row(e))
        yield buf.getvalue()


def transparency_summary(entries, start: dt.datetime, end: dt.datetime) -> dict:
    """Counts by action and by category (and by stage) for [start, end): the published transparency report."""
    rows = entries.filter(at__gte=start, at__lt=end).values_list("stage", "action", "category")
    by_action, by_category, by_stage = Counter(), Counter(), Counter()
    for stage, action, category in rows:
        by_action[action] += 1
        by_stage[stage] += 1
        if category:
            by_category[category] += 1
    return {"start": start.isoformat(), "end": end.isoformat(), "total": sum(by_action.values()),
            "by_action": dict(sorted(by_action.items())), "by_category": dict(sorted(by_category.items())),
            "by_stage": dict(sorted(by_stage.items()))}
