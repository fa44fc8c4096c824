"""Pattern list and policy pages: who may manage what (404 outside it), rules with their validation, CSV export
and import, "test this text", policy validation and inheritance, and the admin's scoping and services."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.html import escape

from moderation import pattern_io, policy_services
from moderation.models import AuditEntry, ModerationPolicy, PatternList, PatternRule
from moderation.policy_services import ScopeRef
from tests import factories

pytestmark = pytest.mark.django_db


def school(world, inst=None) -> ScopeRef:
    return ScopeRef(institution_id=(inst or world.school_a).pk)


def course_scope(course) -> ScopeRef:
    return ScopeRef(institution_id=course.institution_id, course_id=course.pk)


@pytest.fixture
def lists(world):
    """A school list of school A, a list of course A (its teacher's) and one of course B."""
    school_list = policy_services.pattern_list_create(actor=world.staff_a, scope=school(world), name="School words",
                                                      action="hold")
    course_a = policy_services.pattern_list_create(actor=world.teacher_a, scope=course_scope(world.course_a),
                                                   name="Class A words", action="flag")
    course_b = policy_services.pattern_list_create(actor=world.staff_b, scope=course_scope(world.course_b),
                                                   name="Class B words", action="block")
    return school_list, course_a, course_b


def list_url(plist) -> str:
    return reverse("moderation:manage-list", args=[plist.pk])


def test_a_teacher_manages_only_their_own_course(client, world, lists):
    school_list, course_a, course_b = lists
    client.force_login(world.teacher_a)
    page = client.get(reverse("moderation:manage-lists")).content.decode()
    assert "Class A words" in page and "School words" not in page and "Class B words" not in page
    assert client.get(list_url(course_a)).status_code == 200
    for other in (school_list, course_b):
        assert client.get(list_url(other)).status_code == 404
        assert client.post(list_url(other), {"op": "add_rule", "rule-kind": "term",
                                             "rule-pattern": "x"}).status_code == 404
        assert client.get(reverse("moderation:manage-list-export", args=[other.pk])).status_code == 404
    assert not PatternRule.objects.exists()
    assert client.get(reverse("moderation:manage-policy", args=[f"i{world.school_a.pk}"])).status_code == 404
    assert client.get(reverse("moderation:manage-policy", args=[f"k{world.course_b.pk}"])).status_code == 404
    assert client.get(reverse("moderation:manage-policy", args=[f"k{world.course_a.pk}"])).status_code == 200
    assert client.get(reverse("moderation:manage-policy", args=["platform"])).status_code == 404
    # Creating a list for a scope one does not manage is refused as if it did not exist.
    response = client.post(reverse("moderation:manage-lists"), {"new-name": "Sneaky", "new-action": "block",
                                                                "new-scope": f"i{world.school_a.pk}",
                                                                "new-is_active": "on"})
    assert response.status_code == 200 and not PatternList.objects.filter(name="Sneaky").exists()


def test_school_staff_manage_their_school_and_its_courses_only(client, world, lists):
    school_list, course_a, course_b = lists
    client.force_login(world.staff_a)
    assert client.get(list_url(school_list)).status_code == 200
    assert client.get(list_url(course_a)).status_code == 200
    assert client.get(list_url(course_b)).status_code == 404
    client.force_login(world.student_a)
    assert client.get(reverse("moderation:manage-lists")).status_code == 404
    assert client.get(reverse("moderation:manage-home")).status_code == 404


def test_lists_and_rules_through_the_page_are_validated_and_audited(client, world):
    client.force_login(world.staff_a)
    response = client.post(reverse("moderation:manage-lists"), {
        "new-name": "Insults", "new-action": "hold", "new-scope": f"i{world.school_a.pk}", "new-is_active": "on"})
    plist = PatternList.objects.get(name="Insults")
    assert response.status_code == 302 and response["Location"] == list_url(plist)
    assert plist.institution_id == world.school_a.pk and plist.course_id is None

    bad = client.post(list_url(plist), {"op": "add_rule", "rule-kind": "regex", "rule-pattern": "(idiot"})
    html = bad.content.decode()
    assert bad.status_code == 200 and "Not a valid regular expression" in html
    assert html.index("Not a valid regular expression") > html.index('data-testid="add-rule"')  # by its field
    assert client.post(list_url(plist), {"op": "add_rule", "rule-kind": "wildcard",
                                         "rule-pattern": "*"}).status_code == 200
    assert client.post(list_url(plist), {"op": "add_rule", "rule-kind": "term", "rule-pattern": "idiot",
                                         "rule-note": "insult"}).status_code == 302
    dup = client.post(list_url(plist), {"op": "add_rule", "rule-kind": "term", "rule-pattern": "idiot"})
    assert "already has that rule" in dup.content.decode()
    rule = PatternRule.objects.get(pattern_list=plist)
    assert (rule.kind, rule.pattern, rule.note) == ("term", "idiot", "insult")

    client.post(list_url(plist), {"op": "update", "list-name": "Insults v2", "list-action": "flag"})
    plist.refresh_from_db()
    assert (plist.name, plist.action, plist.is_active) == ("Insults v2", "flag", False)
    client.post(list_url(plist), {"op": "remove_rule", "rule_id": rule.pk})
    assert not PatternRule.objects.filter(pattern_list=plist).exists()
    client.post(list_url(plist), {"op": "delete"})
    assert not PatternList.objects.filter(pk=plist.pk).exists()

    entries = AuditEntry.objects.filter(ledger=f"i{world.school_a.pk}", target_type="pattern_list")
    assert list(entries.order_by("index").values_list("action", flat=True)) == [
        "list.create", "rule.add", "list.update", "rule.remove", "list.delete"]
    assert all(e.actor_id == world.staff_a.pk and e.stage == "human" for e in entries)


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_export_guards_formulas_and_round_trips_with_a_report_of_bad_rows(client, world):
    source = policy_services.pattern_list_create(actor=world.staff_a, scope=school(world), name="Src",
                                                 action="hold")
    rules = [("term", "idiot", "insult"), ("wildcard", "stup*d", "=HYPERLINK(\"http://x\")"),
             ("regex", "-?k+i+l+l", "+1 from staff"), ("term", "@handle", "@everyone")]
    for kind, pattern, note in rules:
        policy_services.pattern_rule_add(actor=world.staff_a, list_id=source.pk, kind=kind, pattern=pattern,
                                         note=note)
    client.force_login(world.staff_a)
    response = client.get(reverse("moderation:manage-list-export", args=[source.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Cache-Control"] == "no-store" and "attachment" in response["Content-Disposition"]
    exported = response.content.decode("utf-8-sig")
    rows = _csv_rows(exported)
    assert rows[0] == ["kind", "pattern", "note"]
    assert rows[1] == ["term", "idiot", "insult"]
    assert rows[2] == ["wildcard", "stup*d", "'=HYPERLINK(\"http://x\")"]
    assert rows[3] == ["regex", "'-?k+i+l+l", "'+1 from staff"]
    assert rows[4] == ["term", "'@handle", "'@everyone"]
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row)

    # Into another list: the file as downloaded (with its BOM) plus a bad regex, an unknown kind and a duplicate.
    target = policy_services.pattern_list_create(actor=world.staff_a, scope=school(world), name="Dst",
                                                 action="hold")
    extra = "regex,(unclosed,broken\r\nphrase,hello,\r\nterm,idiot,again\r\n\r\nterm,dummy,fine\r\n"
    upload = SimpleUploadedFile("rules.csv", response.content + extra.encode(), "text/csv")
    page = client.post(list_url(target), {"op": "import", "csv-file": upload})
    assert page.status_code == 200
    report = page.context["import_report"]
    assert (report.added, report.updated, report.skipped) == (5, 0, 1)
    assert [line for line, _ in report.errors] == [6, 7]
    assert "Not a valid regular expression" in report.errors[0][1] and "Unknown kind" in report.errors[1][1]
    html = page.content.decode()
    assert "Line 6:" in html and "Line 7:" in html
    got = set(PatternRule.objects.filter(pattern_list=target).values_list("kind", "pattern", "note"))
    assert got == set(rules) | {("term", "dummy", "fine")}

    # Importing the same file again adds nothing; an audit entry records each import.
    assert pattern_io.export_csv(target).splitlines()[1:5] == exported.splitlines()[1:]
    again = pattern_io.import_csv(actor=world.staff_a, plist=target, data=pattern_io.export_csv(source).encode())
    assert (again.added, again.skipped, again.errors) == (0, 4, [])
    imports = AuditEntry.objects.filter(action="rules.import", target_id=str(target.pk)).order_by("index")
    assert [e.data["added"] for e in imports] == [5, 0]


def test_csv_import_refuses_unreadable_files_whole(world):
    plist = policy_services.pattern_list_create(actor=world.staff_a, scope=school(world), name="L", action="flag")
    with pytest.raises(Exception, match="header"):
        pattern_io.import_csv(actor=world.staff_a, plist=plist, data=b"idiot,term\n")
    with pytest.raises(Exception, match="not UTF-8"):
        pattern_io.import_csv(actor=world.staff_a, plist=plist, data=b"kind,pattern\nterm,caf\xe9\n")
    too_many = "kind,pattern\n" + "".join(f"term,word{i}\n" for i in range(pattern_io.MAX_ROWS + 1))
    with pytest.raises(Exception, match="more than 5,000"):
        pattern_io.import_csv(actor=world.staff_a, plist=plist, data=too_many.encode())
    with pytest.raises(Exception, match="larger than"):
        pattern_io.import_csv(actor=world.staff_a, plist=plist, data=b"kind,pattern\n" + b"x" * pattern_io.MAX_BYTES)
    assert not PatternRule.objects.filter(pattern_list=plist).exists()


def test_test_this_text_shows_the_folded_form_and_hits_escaped(client, world):
    plist = policy_services.pattern_list_create(actor=world.teacher_a, scope=course_scope(world.course_a),
                                                name="Class <b>list</b>", action="hold")
    policy_services.pattern_rule_add(actor=world.teacher_a, list_id=plist.pk, kind="term", pattern="idiot")
    client.force_login(world.teacher_a)
    text = "<script>alert(1)</script> you 1d10t"
    response = client.post(list_url(plist), {"op": "try", "try-text": text})
    html = response.content.decode()
    tried = response.context["tried"]
    assert tried["list"]["hits"][0]["pattern"] == "idiot"
    assert "idiot" in tried["room"]["folded"] and tried["verdict"].action == "hold"
    assert 'data-testid="list-hits"' in html and 'data-testid="room-hits"' in html
    assert tried["room"]["folded"].endswith("you idiot")
    assert f'data-testid="folded">{escape(tried["room"]["folded"])}<' in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>list</b>" not in html and "Class &lt;b&gt;list&lt;/b&gt;" in html

    # The whole room scope, read fresh: a school list added a moment ago applies at once.
    school_list = policy_services.pattern_list_create(actor=world.staff_a, scope=school(world), name="School",
                                                      action="block")
    policy_services.pattern_rule_add(actor=world.staff_a, list_id=school_list.pk, kind="wildcard", pattern="alert*")
    response = client.post(reverse("moderation:manage-try"), {"scope": f"k{world.course_a.pk}", "try-text": text})
    tried = response.context["tried"]
    assert {h["name"] for h in tried["room"]["hits"]} == {"Class <b>list</b>", "School"}
    assert tried["verdict"].action == "block"
    assert client.post(reverse("moderation:manage-try"), {"scope": f"k{world.course_b.pk}",
                                                          "try-text": text}).status_code == 404


def _policy_post(**values) -> dict:
    data = {"op": "save", "fail_mode": "open", "classifier_enabled": "on"}
    data.update({k: str(v) for k, v in values.items()})
    return data


def test_policy_thresholds_are_validated_and_merged(client, world, settings):
    settings.AULA_MODERATION_THRESHOLDS = {"harassment": {"flag": 0.5, "hold": 0.75}}
    url = reverse("moderation:manage-policy", args=[f"i{world.school_a.pk}"])
    client.force_login(world.staff_a)
    out_of_order = client.post(url, _policy_post(harassment__flag=0.9, harassment__hold=0.6))
    assert out_of_order.status_code == 200
    assert "must not be above" in out_of_order.content.decode()
    out_of_range = client.post(url, _policy_post(spam__block=1.5))
    assert out_of_range.status_code == 200 and out_of_range.context["form"].errors["spam__block"]
    inherited_clash = client.post(url, _policy_post(harassment__hold=0.4))  # below the inherited flag 0.5
    assert "inherited" in inherited_clash.content.decode()
    assert not ModerationPolicy.objects.exists()

    saved = client.post(url, _policy_post(harassment__hold=0.6, harassment__block=0.95, fail_mode="closed"))
    assert saved.status_code == 302
    policy = ModerationPolicy.objects.get()
    assert policy.thresholds == {"harassment": {"hold": 0.6, "block": 0.95}} and policy.fail_mode == "closed"
    page = client.get(url)
    effective = page.context["effective"]
    assert effective.thresholds["harassment"] == {"flag": 0.5, "hold": 0.6, "block": 0.95}
    assert effective.classifier_enabled is True and effective.fail_mode == "closed"

    # The course inherits the school's values; its teacher may override, within the order.
    client.force_login(world.teacher_a)
    course_url = reverse("moderation:manage-policy", args=[f"k{world.course_a.pk}"])
    clash = client.post(course_url, _policy_post(harassment__block=0.55))
    assert "hold (0.6, inherited) must not be above block (0.55)" in clash.content.decode()
    assert client.post(course_url, _policy_post(harassment__flag=0.3, classifier_enabled="")).status_code == 302
    from moderation import selectors

    merged = selectors.policy_for(institution_id=world.school_a.pk, course_id=world.course_a.pk, fresh=True)
    assert merged.thresholds["harassment"] == {"flag": 0.3, "hold": 0.6, "block": 0.95}
    assert merged.classifier_enabled is False
    client.post(course_url, {"op": "reset"})
    assert ModerationPolicy.objects.count() == 1
    assert list(AuditEntry.objects.filter(target_type="policy").order_by("at", "index")
                .values_list("action", flat=True)) == ["policy.save", "policy.save", "policy.reset"]


def test_admin_scopes_lists_to_the_staff_members_schools_and_saves_through_services(client, world, lists):
    school_list, course_a, course_b = lists
    for codename in ("view_patternlist", "change_patternlist", "add_patternlist", "view_patternrule",
                     "add_patternrule", "change_patternrule", "delete_patternrule", "view_auditentry"):
        world.staff_a.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(world.staff_a)
    changelist = client.get(reverse("admin:moderation_patternlist_changelist")).content.decode()
    assert "School words" in changelist and "Class A words" in changelist and "Class B words" not in changelist
    assert client.get(reverse("admin:moderation_patternlist_change", args=[course_b.pk])).status_code == 302
    url = reverse("admin:moderation_patternlist_change", args=[school_list.pk])
    response = client.post(url, {
        "name": "School words", "action": "block", "is_active": "on",
        "rules-TOTAL_FORMS": "1", "rules-INITIAL_FORMS": "0", "rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000",
        "rules-0-kind": "term", "rules-0-pattern": "idiot", "rules-0-note": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    school_list.refresh_from_db()
    assert school_list.action == "block" and school_list.rules.get().pattern == "idiot"
    actions = AuditEntry.objects.filter(target_type="pattern_list", target_id=str(school_list.pk))
    assert {"list.update", "rule.add"} <= set(actions.values_list("action", flat=True))
    bad = client.post(url, {
        "name": "School words", "action": "block", "is_active": "on",
        "rules-TOTAL_FORMS": "1", "rules-INITIAL_FORMS": "0", "rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000",
        "rules-0-kind": "regex", "rules-0-pattern": "(", "rules-0-note": "",
    })
    assert bad.status_code == 200 and "Not a valid regular expression" in bad.content.decode()
    # A staff member cannot create a platform list (no school chosen).
    add = client.post(reverse("admin:moderation_patternlist_add"), {
        "name": "Everywhere", "action": "block", "is_active": "on", "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0", "rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000"})
    assert add.status_code == 200 and not PatternList.objects.filter(name="Everywhere").exists()
    add = client.post(reverse("admin:moderation_patternlist_add"), {
        "name": "Course list", "action": "flag", "is_active": "on", "course": world.course_a.pk,
        "rules-TOTAL_FORMS": "0", "rules-INITIAL_FORMS": "0", "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000"})
    assert add.status_code == 302
    created = PatternList.objects.get(name="Course list")
    assert (created.institution_id, created.course_id) == (world.school_a.pk, world.course_a.pk)


def test_audit_entries_have_no_add_change_or_delete_in_the_admin(client, world, lists):
    admin_user = factories.user("root", superuser=True)
    client.force_login(admin_user)
    entry = AuditEntry.objects.first()
    assert client.get(reverse("admin:moderation_auditentry_changelist")).status_code == 200
    assert client.get(reverse("admin:moderation_auditentry_add")).status_code == 403
    assert client.get(reverse("admin:moderation_auditentry_delete", args=[entry.pk])).status_code == 403
    view = client.get(reverse("admin:moderation_auditentry_change", args=[entry.pk]))
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert client.post(reverse("admin:moderation_auditentry_change", args=[entry.pk]),
                       {"reason": "edited"}).status_code == 403
    entry.refresh_from_db()
    assert entry.reason == ""


def test_every_management_page_renders_for_a_superuser(client, world, lists):
    root = factories.user("root", superuser=True)
    client.force_login(root)
    for name, args in [("manage-home", []), ("manage-lists", []), ("manage-list", [lists[0].pk]), ("manage-try", []),
                       ("manage-policies", []), ("manage-policy", ["platform"]), ("manage-appeals", []),
                       ("manage-audit", []), ("manage-audit-verify", []), ("manage-transparency", []),
                       ("notices", [])]:
        response = client.get(reverse(f"moderation:{name}", args=args))
        assert response.status_code == 200, name
    home = client.get(reverse("moderation:manage-home")).content.decode()
    assert reverse("moderation:manage-audit") in home and reverse("moderation:manage-lists") in home
    assert client.post(reverse("moderation:manage-policy", args=["platform"]),
                       _policy_post(spam__hold=0.9)).status_code == 302
    assert AuditEntry.objects.filter(ledger="platform", action="policy.save").exists()
