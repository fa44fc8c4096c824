"""Forms of the moderation management pages and the author's notices page: input shape and field errors only;
the writes (and their own checks) are in policy_services, pattern_io and services."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.core.exceptions import ValidationError

from moderation import patterns, policy_services
from moderation.models import Category, ModerationPolicy, PatternList, PatternRule

LEVEL_LABELS = {"notify": "Notify", "flag": "Flag", "hold": "Hold", "block": "Block"}


class PatternListForm(forms.Form):
    name = forms.CharField(max_length=120)
    action = forms.ChoiceField(choices=PatternList._meta.get_field("action").choices,
                               help_text="What a message that hits one of the list's rules gets.")
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, *args, scopes: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if scopes is not None:  # creating: where the list applies (fixed once created)
            self.fields["scope"] = forms.ChoiceField(choices=[(s.key, s.label) for s in scopes],
                                                     help_text="Where the list applies.")
            self.order_fields(["name", "scope", "action", "is_active"])


class PatternRuleForm(forms.Form):
    kind = forms.ChoiceField(choices=PatternRule.Kind.choices, initial=PatternRule.Kind.TERM)
    pattern = forms.CharField(max_length=patterns.MAX_PATTERN, strip=True)
    note = forms.CharField(max_length=200, required=False, help_text="Why the rule is there (for other staff).")

    def clean(self):
        data = super().clean()
        if data.get("kind") and data.get("pattern") is not None:
            try:
                data["pattern"] = patterns.validate_rule(data["kind"], data["pattern"])
            except ValidationError as exc:
                self.add_error("pattern", exc)
        return data


class CsvImportForm(forms.Form):
    file = forms.FileField(label="CSV file", help_text="Columns kind,pattern,note with that header; UTF-8; at most "
                                                       "1 MB and 5,000 rules.")


class TryTextForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=4000, strip=False,
                           label="Text to test")


class PolicyForm(forms.Form):
    """One number field per classifier category and level (blank: inherited), the fail mode and the switch."""

    fail_mode = forms.ChoiceField(choices=ModerationPolicy.FailMode.choices, widget=forms.RadioSelect)
    classifier_enabled = forms.BooleanField(required=False, label="Use the classifier")

    def __init__(self, *args, inherited: ModerationPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self.inherited = inherited
        self.rows = []
        for cat in policy_services.CLASSIFIER_CATEGORIES:
            cells = []
            for level in policy_services.LEVELS:
                name = self.field_name(cat, level)
                value = inherited.thresholds.get(cat, {}).get(level)
                self.fields[name] = forms.FloatField(
                    required=False, min_value=0, max_value=1, label=f"{Category(cat).label}: {LEVEL_LABELS[level]}",
                    widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "max": "1",
                                                    "placeholder": "" if value is None else f"{value:g}"}))
                cells.append((level, name, value))
            self.rows.append((cat, Category(cat).label, cells))

    @staticmethod
    def field_name(cat: str, level: str) -> str:
        return f"{cat}__{level}"

    @staticmethod
    def initial_for(policy: ModerationPolicy | None, inherited: ModerationPolicy) -> dict:
        initial = {"fail_mode": (policy or inherited).fail_mode,
                   "classifier_enabled": (policy or inherited).classifier_enabled}
        for cat, levels in (policy.thresholds if policy else {}).items():
            for level, value in levels.items():
                initial[PolicyForm.field_name(cat, level)] = value
        return initial

    def thresholds(self) -> dict:
        out: dict = {}
        for cat in policy_services.CLASSIFIER_CATEGORIES:
            for level in policy_services.LEVELS:
                value = self.cleaned_data.get(self.field_name(cat, level))
                if value is not None:
                    out.setdefault(cat, {})[level] = value
        return out

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        for cat, level, message in policy_services.threshold_problems(self.thresholds(), self.inherited.thresholds):
            name = self.field_name(cat, level)
            self.add_error(name if name in self.fields else None, message)
        return data

    def bound_rows(self):
        """(label, [(level, bound field, inherited value)]) per category, for the template's table."""
        return [(label, [(LEVEL_LABELS[level], self[name], value) for level, name, value in cells])
                for _cat, label, cells in self.rows]


class AppealForm(forms.Form):
    statement = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=2000,
                                label="Why should this decision be looked at again?")


class AppealDecideForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("uphold", "Uphold the decision"), ("overturn", "Overturn the decision")],
                                widget=forms.RadioSelect)
    note = forms.CharField(max_length=500, label="Reason (the author is told it)")


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, label="Reason")


class AuditFilterForm(forms.Form):
    ledger = forms.ChoiceField(required=False, choices=[])
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    action = forms.CharField(required=False, max_length=32, help_text="e.g. decide.remove, or decide for all "
                                                                     "decisions")
    stage = forms.ChoiceField(required=False, choices=[("", "Any")] + [(s, s) for s in (
        "classifier", "patterns", "pipeline", "human", "report", "appeal", "escalation", "dmca", "system")])

    def __init__(self, *args, ledgers: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ledger"].choices = [("", "All I may see")] + [(k, k) for k in ledgers]

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            self.add_error("end", "The end is before the start.")
        return data


class TransparencyForm(forms.Form):
    month = forms.CharField(required=False, max_length=7, help_text="YYYY-MM",
                            widget=forms.TextInput(attrs={"type": "month"}))
    start = forms.DateField(required=False, label="Or from", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="to (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        month, start, end = data.get("month"), data.get("start"), data.get("end")
        if month:
            try:
                first = dt.datetime.strptime(month, "%Y-%m").date()
            except ValueError:
                self.add_error("month", "Use the form YYYY-MM.")
                return data
            data["range"] = (first, (first + dt.timedelta(days=32)).replace(day=1))
        elif start and end:
            if start > end:
                self.add_error("end", "The end is before the start.")
                return data
            data["range"] = (start, end + dt.timedelta(days=1))
        elif start or end:
            self.add_error(None, "Give both dates of the range, or a month.")
        return data
