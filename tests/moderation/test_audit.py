"""The audit pages: who sees which ledgers, filters and paging, the CSV export (its lines re-verify offline),
the chain check (a tampered entry is found), the database's append-only rule, the transparency summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from classrooms.models import DistrictRole
from moderation import audit
from moderation.models import AuditEntry, AuditLedger
from tests import factories

pytestmark = pytest.mark.django_db


def record(ledger: str, action: str, *, stage: str = "human", category: str = "", actor=None, reason: str = ""):
    return audit.audit_record(ledger=ledger, stage=stage, action=action, target_type="class_chat", target_id="m1",
                              actor=actor, category=category, reason=reason, data={"item": 1, "scores": {"x": 0.5}})


def _unguard(cell: str) -> str:
    """The cell as stored: the export puts a quote before what a spreadsheet would run as a formula."""
    return cell[1:] if cell[:1] == "'" and cell[1:].lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r", "\n")) \
        else cell


@pytest.fixture
def ledgers(world):
    a, c = f"i{world.school_a.pk}", f"i{world.school_c.pk}"
    record(a, "hold", stage="classifier", category="harassment")
    record(a, "decide.remove", actor=world.teacher_a, category="harassment", reason="rude, said twice")
    record(a, "decide.approve", actor=world.teacher_a, category="spam", reason="=HYPERLINK(1)")
    record(a, "block", stage="patterns", category="pattern")
    record(c, "decide.ban", actor=world.staff_b, category="harassment")
    return a, c


def test_school_staff_see_their_schools_ledgers_and_others_none(client, world, ledgers):
    a, c = ledgers
    client.force_login(world.staff_a)
    page = client.get(reverse("moderation:manage-audit"))
    assert page.status_code == 200
    assert {e.ledger for e in page.context["page"]} == {a}
    assert page.context["page"].paginator.count == 4
    decided = client.get(reverse("moderation:manage-audit"), {"action": "decide"})
    assert {e.action for e in decided.context["page"]} == {"decide.remove", "decide.approve"}
    staged = client.get(reverse("moderation:manage-audit"), {"stage": "patterns"})
    assert [e.action for e in staged.context["page"]] == ["block"]
    future = (timezone.localdate() + dt.timedelta(days=1)).isoformat()
    assert client.get(reverse("moderation:manage-audit"), {"start": future}).context["page"].paginator.count == 0
    assert client.get(reverse("moderation:manage-audit"), {"ledger": c}).context["page"].paginator.count == 0

    for outsider in (world.teacher_a, world.student_a):
        client.force_login(outsider)
        assert client.get(reverse("moderation:manage-audit")).status_code == 404
        assert client.get(reverse("moderation:manage-audit-export")).status_code == 404

    district_admin = factories.user("district_admin")
    DistrictRole.objects.create(user=district_admin, district=world.district)
    client.force_login(district_admin)
    seen = client.get(reverse("moderation:manage-audit")).context["page"]
    assert {e.ledger for e in seen} == {a}  # school B has no entries; school C is another district's


def test_channel_owners_see_their_channels_ledger(client, world):
    owner = factories.user("owner")
    channel = factories.channel(owner)
    record(f"c{channel.pk}", "decide.timeout")
    record(f"i{world.school_a.pk}", "decide.remove")
    client.force_login(owner)
    page = client.get(reverse("moderation:manage-audit"))
    assert [e.ledger for e in page.context["page"]] == [f"c{channel.pk}"]


def test_export_streams_csv_whose_lines_verify_offline(client, world, ledgers):
    a, _c = ledgers
    client.force_login(world.staff_a)
    response = client.get(reverse("moderation:manage-audit-export"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    raw = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert raw[2]["reason"] == "'=HYPERLINK(1)"  # inert in a spreadsheet
    rows = [{k: _unguard(v) for k, v in r.items()} for r in raw]
    assert [r["ledger"] for r in rows] == [a] * 4 and [int(r["index"]) for r in rows] == [0, 1, 2, 3]
    prev = audit.GENESIS
    for r in rows:  # an auditor re-computes each hash from the exported cells alone
        assert r["prev_hash"] == prev
        digest = audit._digest(prev, r["ledger"], int(r["index"]), dt.datetime.fromisoformat(r["at"]),
                               int(r["actor_id"]) if r["actor_id"] else None, r["stage"], r["action"],
                               r["target_type"], r["target_id"], r["category"], r["reason"], r["rule"],
                               json.loads(r["data"]))
        assert digest == r["hash"]
        prev = r["hash"]
    assert AuditLedger.objects.get(key=a).head == prev
    filtered = client.get(reverse("moderation:manage-audit-export"), {"action": "decide.remove"})
    lines = b"".join(filtered.streaming_content).decode().splitlines()
    assert len(lines) == 2 and "rude, said twice" in lines[1]


def test_export_leaves_empty_cells_empty(client, world, ledgers):
    client.force_login(world.staff_a)
    response = client.get(reverse("moderation:manage-audit-export"), {"stage": "classifier"})
    row = next(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert row["actor_id"] == "" and row["reason"] == ""


def test_verify_finds_an_entry_changed_around_the_trigger(client, world, ledgers):
    a, c = ledgers
    assert audit.verify(a) == (True, None)
    target = AuditEntry.objects.get(ledger=a, index=1)
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE moderation_auditentry DISABLE TRIGGER ALL")
        try:
            cur.execute("UPDATE moderation_auditentry SET reason = %s WHERE id = %s", ["polite", target.pk])
        finally:
            cur.execute("ALTER TABLE moderation_auditentry ENABLE TRIGGER ALL")
    assert audit.verify(a) == (False, 1)
    assert audit.verify(c) == (True, None)
    client.force_login(world.staff_a)
    page = client.get(reverse("moderation:manage-audit-verify"))
    assert page.context["results"] == [{"ledger": a, "ok": False, "first_bad": 1, "count": 4}]
    assert "Broken at entry 1" in page.content.decode()
    superuser = factories.user("root", superuser=True)
    client.force_login(superuser)
    data = client.get(reverse("moderation:manage-audit-verify"), {"format": "json"}).json()
    assert {r["ledger"]: r["ok"] for r in data["ledgers"]} == {a: False, c: True}


def test_the_database_refuses_to_change_or_remove_an_entry(ledgers):
    a, _c = ledgers
    entry = AuditEntry.objects.filter(ledger=a).first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), \
            connection.cursor() as cur:
        cur.execute("DELETE FROM moderation_auditentry WHERE ledger = %s", [a])
    assert AuditEntry.objects.filter(ledger=a).count() == 4 and audit.verify(a) == (True, None)


def test_transparency_summary_counts_a_month_or_a_range(client, world, ledgers):
    a, _c = ledgers
    last_month = timezone.now().replace(day=1) - dt.timedelta(days=3)
    with mock.patch("moderation.audit.timezone.now", return_value=last_month):
        record(a, "decide.remove", category="harassment")
    client.force_login(world.staff_a)
    url = reverse("moderation:manage-transparency")
    this_month = client.get(url, {"format": "json"}).json()
    assert this_month["total"] == 4
    assert this_month["by_action"] == {"block": 1, "decide.approve": 1, "decide.remove": 1, "hold": 1}
    assert this_month["by_category"] == {"harassment": 2, "pattern": 1, "spam": 1}
    assert this_month["by_stage"] == {"classifier": 1, "human": 2, "patterns": 1}
    earlier = client.get(url, {"format": "json", "month": last_month.strftime("%Y-%m")}).json()
    assert earlier["total"] == 1 and earlier["by_action"] == {"decide.remove": 1}
    both = client.get(url, {"format": "json", "start": last_month.date().isoformat(),
                            "end": timezone.localdate().isoformat()}).json()
    assert both["total"] == 5
    page = client.get(url, {"month": last_month.strftime("%Y-%m")})
    assert page.status_code == 200 and 'data-testid="total">1<' in page.content.decode()
    assert client.get(url, {"format": "json", "month": "2026-13"}).status_code == 400
    assert client.get(url, {"ledger": f"i{world.school_c.pk}"}).status_code == 404
    client.force_login(world.student_a)
    assert client.get(url).status_code == 404
