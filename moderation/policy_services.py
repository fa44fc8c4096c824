"""Writes to the moderation set-up: pattern lists and their rules, and per-scope policies, with who may make them.

A scope is where a list or policy applies: the platform, a school, one course of a school, or a stream channel
(`ScopeRef`, written "platform", "i<id>", "k<id>", "c<id>" in URLs and forms). School staff (and district
administrators) manage their schools and the schools' courses, teachers their own courses, channel owners and
moderators their channels, superusers everything. Every write here is audited in the scope's ledger and drops
the per-process caches of lists and policies once it commits; the pages, the admin and the CSV import all call
these functions. (The `can_manage` reads would sit in selectors.py; they live here while that file is shared.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from classrooms.models import Course, Enrollment, Institution, Role
from classrooms.selectors import staff_institution_ids
from moderation import patterns, selectors
from moderation.audit import audit_record, ledger_for
from moderation.models import Action, Category, ModerationPolicy, PatternList, PatternRule

LEVELS = ("notify", "flag", "hold", "block")
ORDERED_LEVELS = ("flag", "hold", "block")  # each at most the next: a stronger action needs a higher score
CLASSIFIER_CATEGORIES = [c for c in Category.values if c not in (Category.PATTERN, Category.REPORT, Category.DEGRADED)]
LIST_ACTIONS = [a for a in Action.values if a != Action.ALLOW]


# --- scopes ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScopeRef:
    institution_id: int | None = None
    course_id: int | None = None
    channel_id: int | None = None
    label: str = ""

    @property
    def key(self) -> str:
        if self.course_id:
            return f"k{self.course_id}"
        if self.institution_id:
            return f"i{self.institution_id}"
        if self.channel_id:
            return f"c{self.channel_id}"
        return "platform"

    @property
    def kind(self) -> str:
        return {"k": "course", "i": "school", "c": "channel"}.get(self.key[0], "platform")

    @property
    def ledger(self) -> str:
        return ledger_for(institution_id=self.institution_id, channel_id=self.channel_id)

    def filter(self) -> Q:
        """The rows set for exactly this scope (not the ones it inherits)."""
        if self.course_id:
            return Q(course_id=self.course_id)
        if self.institution_id:
            return Q(institution_id=self.institution_id, course__isnull=True)
        if self.channel_id:
            return Q(channel_id=self.channel_id)
        return Q(institution__isnull=True, course__isnull=True, channel__isnull=True)

    def parent(self) -> ScopeRef | None:
        if self.course_id:
            return ScopeRef(institution_id=self.institution_id)
        if self.institution_id or self.channel_id:
            return ScopeRef()
        return None


def scope_of(obj) -> ScopeRef:
    """The scope of a PatternList or ModerationPolicy row."""
    return ScopeRef(institution_id=obj.institution_id, course_id=obj.course_id, channel_id=obj.channel_id)


def scope_parse(key: str) -> ScopeRef | None:
    """"platform", "i<id>", "k<id>" or "c<id>" of an existing school, course or channel (else None)."""
    key = (key or "").strip()
    if key == "platform":
        return ScopeRef(label="Platform (every school and channel)")
    if len(key) < 2 or key[0] not in "ikc" or not key[1:].isdigit():
        return None
    pk = int(key[1:])
    if key[0] == "i":
        inst = Institution.objects.filter(pk=pk).first()
        return inst and ScopeRef(institution_id=inst.pk, label=f"School: {inst.name}")
    if key[0] == "k":
        course = Course.objects.select_related("institution").filter(pk=pk).first()
        return course and ScopeRef(institution_id=course.institution_id, course_id=course.pk,
                                   label=f"Course: {course.code} {course.title} ({course.institution.name})")
    from streaming.models import Channel

    channel = Channel.objects.filter(pk=pk).first()
    return channel and ScopeRef(channel_id=channel.pk, label=f"Channel: {channel.title}")


@dataclass(frozen=True)
class Reach:
    """What one person manages. `everything` for superusers (then the id sets are not used)."""

    everything: bool
    schools: frozenset[int]
    courses: frozenset[int]
    channels: frozenset[int]

    @property
    def anything(self) -> bool:
        return self.everything or bool(self.schools or self.courses or self.channels)


def reach_of(user) -> Reach:
    if not user.is_authenticated or not user.is_active:
        return Reach(False, frozenset(), frozenset(), frozenset())
    if user.is_superuser:
        return Reach(True, frozenset(), frozenset(), frozenset())
    from streaming.models import Channel, ChannelRole

    schools = staff_institution_ids(user) or frozenset()
    courses = frozenset(Enrollment.objects.filter(user=user, is_active=True, role=Role.TEACHER)
                        .values_list("course_id", flat=True))
    channels = frozenset(Channel.objects.filter(owner=user).values_list("id", flat=True)) | frozenset(
        ChannelRole.objects.filter(user=user, role=ChannelRole.Kind.MODERATOR).values_list("channel_id", flat=True))
    return Reach(False, frozenset(schools), courses, channels)


def can_manage(user, scope: ScopeRef, reach: Reach | None = None) -> bool:
    reach = reach or reach_of(user)
    if reach.everything:
        return True
    if scope.course_id:
        return scope.institution_id in reach.schools or scope.course_id in reach.courses
    if scope.institution_id:
        return scope.institution_id in reach.schools
    if scope.channel_id:
        return scope.channel_id in reach.channels
    return False  # the platform's own lists and policy: superusers only


def _reach_filter(reach: Reach) -> Q:
    return (Q(institution_id__in=reach.schools) | Q(course_id__in=reach.courses)
            | Q(channel_id__in=reach.channels))


def lists_for(user) -> QuerySet[PatternList]:
    """The pattern lists a person may manage (anything else answers 404)."""
    reach = reach_of(user)
    if reach.everything:
        return PatternList.objects.all()
    if not reach.anything:
        return PatternList.objects.none()
    return PatternList.objects.filter(_reach_filter(reach))


def manageable_scopes(user, *, limit: int = 500) -> list[ScopeRef]:
    """The scopes a person may set lists and policies for, for choosers (a superuser's list is capped)."""
    from streaming.models import Channel

    reach = reach_of(user)
    scopes: list[ScopeRef] = []
    if reach.everything:
        scopes.append(ScopeRef(label="Platform (every school and channel)"))
        schools = Institution.objects.order_by("name")[:limit]
        courses = Course.objects.select_related("institution").order_by("institution__name", "code")[:limit]
        channels = Channel.objects.order_by("title")[:limit]
    else:
        schools = Institution.objects.filter(pk__in=reach.schools).order_by("name")
        courses = (Course.objects.select_related("institution")
                   .filter(Q(institution_id__in=reach.schools) | Q(pk__in=reach.courses))
                   .order_by("institution__name", "code"))
        channels = Channel.objects.filter(pk__in=reach.channels).order_by("title")
    scopes += [ScopeRef(institution_id=s.pk, label=f"School: {s.name}") for s in schools]
    scopes += [ScopeRef(institution_id=c.institution_id, course_id=c.pk,
                        label=f"Course: {c.code} {c.title} ({c.institution.name})") for c in courses]
    scopes += [ScopeRef(channel_id=c.pk, label=f"Channel: {c.title}") for c in channels]
    return scopes


def _check(actor, scope: ScopeRef) -> None:
    if actor is not None and not can_manage(actor, scope):
        raise PermissionDenied("You do not manage moderation for this scope.")


def _forget_after_commit() -> None:
    transaction.on_commit(patterns.forget_cache)
    transaction.on_commit(selectors.forget_policies)


def _stage(actor) -> str:
    return "system" if actor is None else "human"


def _audit_list(plist: PatternList, *, action: str, actor, **data) -> None:
    scope = scope_of(plist)
    audit_record(ledger=scope.ledger, stage=_stage(actor), action=action, target_type="pattern_list",
                 target_id=plist.pk, actor=actor, rule=plist.name[:120],
                 data={"scope": scope.key, "list_action": plist.action, **data})


# --- pattern lists -----------------------------------------------------------------------------------------

def _clean_list_fields(name: str, action: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the list a name."})
    if len(name) > 120:
        raise ValidationError({"name": "A name is at most 120 characters."})
    if action not in LIST_ACTIONS:
        raise ValidationError({"action": f"Choose one of: {', '.join(LIST_ACTIONS)}."})
    return name


def pattern_list_create(*, actor, scope: ScopeRef, name: str, action: str, is_active: bool = True) -> PatternList:
    _check(actor, scope)
    name = _clean_list_fields(name, action)
    with transaction.atomic():
        plist = PatternList.objects.create(institution_id=scope.institution_id, course_id=scope.course_id,
                                           channel_id=scope.channel_id, name=name, action=action,
                                           is_active=is_active, created_by=actor)
        _audit_list(plist, action="list.create", actor=actor, active=is_active)
        _forget_after_commit()
    return plist


def pattern_list_update(*, actor, list_id: int, name: str, action: str, is_active: bool) -> PatternList:
    name = _clean_list_fields(name, action)
    with transaction.atomic():
        plist = PatternList.objects.select_for_update().filter(pk=list_id).first()
        if plist is None:
            raise PermissionDenied("No such list.")
        _check(actor, scope_of(plist))
        before = {"name": plist.name, "action": plist.action, "active": plist.is_active}
        plist.name, plist.action, plist.is_active = name, action, is_active
        plist.save(update_fields=["name", "action", "is_active", "updated_at"])
        after = {"name": plist.name, "action": plist.action, "active": plist.is_active}
        _audit_list(plist, action="list.update", actor=actor,
                    changed={k: [before[k], after[k]] for k in before if before[k] != after[k]})
        _forget_after_commit()
    return plist


def pattern_list_delete(*, actor, list_id: int) -> None:
    with transaction.atomic():
        plist = PatternList.objects.select_for_update().filter(pk=list_id).first()
        if plist is None:
            raise PermissionDenied("No such list.")
        _check(actor, scope_of(plist))
        _audit_list(plist, action="list.delete", actor=actor, rules=plist.rules.count())
        plist.delete()
        _forget_after_commit()


def pattern_rule_add(*, actor, list_id: int, kind: str, pattern: str, note: str = "") -> PatternRule:
    """One rule, validated (patterns.validate_rule). A rule the list already has is refused."""
    try:
        pattern = patterns.validate_rule(kind, pattern)
    except ValidationError as exc:
        raise ValidationError({"pattern": exc.messages}) from None
    note = (note or "").strip()
    if len(note) > 200:
        raise ValidationError({"note": "A note is at most 200 characters."})
    with transaction.atomic():
        plist = PatternList.objects.select_for_update().filter(pk=list_id).first()
        if plist is None:
            raise PermissionDenied("No such list.")
        _check(actor, scope_of(plist))
        try:
            with transaction.atomic():
                rule = PatternRule.objects.create(pattern_list=plist, kind=kind, pattern=pattern, note=note)
        except IntegrityError:
            raise ValidationError({"pattern": "This list already has that rule."}) from None
        _audit_list(plist, action="rule.add", actor=actor, rule_id=rule.pk, kind=kind, pattern=pattern)
        _forget_after_commit()
    return rule


def pattern_rule_remove(*, actor, rule_id: int) -> None:
    with transaction.atomic():
        rule = PatternRule.objects.select_related("pattern_list").filter(pk=rule_id).first()
        if rule is None:
            raise PermissionDenied("No such rule.")
        plist = PatternList.objects.select_for_update().get(pk=rule.pattern_list_id)
        _check(actor, scope_of(plist))
        _audit_list(plist, action="rule.remove", actor=actor, rule_id=rule.pk, kind=rule.kind, pattern=rule.pattern)
        rule.delete()
        _forget_after_commit()


def pattern_rules_upsert(*, actor, list_id: int, rows: list[tuple[str, str, str]], source: str = "") -> dict:
    """Many already validated (kind, pattern, note) rows at once (the CSV import): new rules are added, a rule
    the list has gets the row's note, identical rows are skipped. One transaction, one audit entry."""
    with transaction.atomic():
        plist = PatternList.objects.select_for_update().filter(pk=list_id).first()
        if plist is None:
            raise PermissionDenied("No such list.")
        _check(actor, scope_of(plist))
        existing = {(r.kind, r.pattern): r for r in plist.rules.all()}
        added, updated, skipped = [], 0, 0
        for kind, pattern, note in rows:
            rule = existing.get((kind, pattern))
            if rule is None:
                rule = PatternRule(pattern_list=plist, kind=kind, pattern=pattern, note=note)
                existing[(kind, pattern)] = rule
                added.append(rule)
            elif note and rule.note != note and rule.pk:
                rule.note = note
                rule.save(update_fields=["note"])
                updated += 1
            else:
                skipped += 1
        # Rules are not audited one by one (the list's entry below records the import), so a bulk insert is fine.
        PatternRule.objects.bulk_create(added)
        counts = {"added": len(added), "updated": updated, "skipped": skipped}
        _audit_list(plist, action="rules.import", actor=actor, source=source, **counts)
        _forget_after_commit()
    return counts


# --- policies ----------------------------------------------------------------------------------------------

def _merge(base: dict, override: dict) -> dict:
    merged = {cat: dict(levels) for cat, levels in (base or {}).items()}
    for cat, levels in (override or {}).items():
        merged.setdefault(cat, {}).update({k: v for k, v in levels.items() if v is not None})
    return merged


def inherited_policy(scope: ScopeRef) -> ModerationPolicy:
    """What a scope gets from above it when it sets nothing itself (unsaved)."""
    parent = scope.parent()
    if parent is None:
        return ModerationPolicy(thresholds=_merge(settings.AULA_MODERATION_THRESHOLDS, {}))
    return selectors.policy_for(institution_id=parent.institution_id, course_id=parent.course_id,
                                channel_id=parent.channel_id, fresh=True)


def effective_policy(scope: ScopeRef) -> ModerationPolicy:
    return selectors.policy_for(institution_id=scope.institution_id, course_id=scope.course_id,
                                channel_id=scope.channel_id, fresh=True)


def own_policy(scope: ScopeRef) -> ModerationPolicy | None:
    return ModerationPolicy.objects.filter(scope.filter()).first()


def _shown(level: str, value: float, own: dict) -> str:
    return f"{level} ({value:g}{'' if level in own else ', inherited'})"


def threshold_problems(thresholds: dict, inherited: dict) -> list[tuple[str, str, str]]:
    """(category, level, message) for every value out of range or out of order (flag <= hold <= block, checked
    on the values that will apply: this scope's over the inherited ones)."""
    problems = []
    clean: dict = {}
    for cat, levels in (thresholds or {}).items():
        if cat not in CLASSIFIER_CATEGORIES:
            problems.append((cat, "", f"Unknown category {cat!r}."))
            continue
        for level, value in (levels or {}).items():
            if level not in LEVELS:
                problems.append((cat, level, f"Unknown level {level!r}."))
                continue
            if value is None or value == "":
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                problems.append((cat, level, "Enter a number between 0 and 1."))
                continue
            if not 0 <= value <= 1:
                problems.append((cat, level, "Enter a number between 0 and 1."))
                continue
            clean.setdefault(cat, {})[level] = value
    if problems:
        return problems
    merged = _merge(inherited, clean)
    for cat in CLASSIFIER_CATEGORIES:
        levels = merged.get(cat, {})
        set_levels = [(lvl, float(levels[lvl])) for lvl in ORDERED_LEVELS if levels.get(lvl) is not None]
        own = clean.get(cat, {})
        for (low, low_v), (high, high_v) in itertools.pairwise(set_levels):
            if low_v > high_v:
                problems.append((cat, high if high in own else low,
                                 f"{_shown(low, low_v, own)} must not be above {_shown(high, high_v, own)}: "
                                 "a stronger action needs a higher score."))
    return problems


def thresholds_clean(thresholds: dict, inherited: dict) -> dict:
    problems = threshold_problems(thresholds, inherited)
    if problems:
        raise ValidationError([f"{Category(cat).label if cat in Category.values else cat}"
                               f"{' ' + lvl if lvl else ''}: {msg}" for cat, lvl, msg in problems])
    out: dict = {}
    for cat, levels in (thresholds or {}).items():
        for level, value in (levels or {}).items():
            if value is not None and value != "":
                out.setdefault(cat, {})[level] = round(float(value), 4)
    return out


def policy_save(*, actor, scope: ScopeRef, thresholds: dict, fail_mode: str, classifier_enabled: bool
                ) -> ModerationPolicy:
    """Set a scope's own thresholds (only the values it overrides), fail mode and classifier switch."""
    _check(actor, scope)
    if fail_mode not in ModerationPolicy.FailMode.values:
        raise ValidationError({"fail_mode": "Choose open or closed."})
    thresholds = thresholds_clean(thresholds, inherited_policy(scope).thresholds)
    with transaction.atomic():
        policy = ModerationPolicy.objects.select_for_update().filter(scope.filter()).first()
        before = None if policy is None else {"thresholds": policy.thresholds, "fail_mode": policy.fail_mode,
                                              "classifier": policy.classifier_enabled}
        if policy is None:
            policy = ModerationPolicy(institution_id=scope.institution_id, course_id=scope.course_id,
                                      channel_id=scope.channel_id)
        policy.thresholds, policy.fail_mode, policy.classifier_enabled = thresholds, fail_mode, classifier_enabled
        policy.updated_by = actor
        policy.save()
        audit_record(ledger=scope.ledger, stage=_stage(actor), action="policy.save", target_type="policy",
                     target_id=policy.pk, actor=actor,
                     data={"scope": scope.key, "before": before,
                           "after": {"thresholds": thresholds, "fail_mode": fail_mode,
                                     "classifier": classifier_enabled}})
        _forget_after_commit()
    return policy


def policy_reset(*, actor, scope: ScopeRef) -> None:
    """Remove a scope's own policy: it inherits everything again."""
    _check(actor, scope)
    with transaction.atomic():
        policy = ModerationPolicy.objects.select_for_update().filter(scope.filter()).first()
        if policy is None:
            return
        audit_record(ledger=scope.ledger, stage=_stage(actor), action="policy.reset", target_type="policy",
                     target_id=policy.pk, actor=actor,
                     data={"scope": scope.key, "before": {"thresholds": policy.thresholds,
                                                          "fail_mode": policy.fail_mode,
                                                          "classifier": policy.classifier_enabled}})
        policy.delete()
        _forget_after_commit()
