"""Input and output shapes of the analytics API."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from rest_framework import serializers

from analytics import selectors

MAX_RANGE = dt.timedelta(days=31)


class SliceIn(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Range start (default: one hour before `end`).")
    end = serializers.DateTimeField(required=False, help_text="Range end, exclusive (default: now).")
    kind = serializers.ChoiceField(choices=selectors.KINDS, required=False)
    country = serializers.RegexField(r"^[A-Z]{2}$", required=False, help_text="ISO 3166-1 alpha-2 code.")
    region = serializers.RegexField(r"^[A-Z]{2}-[A-Z0-9]{1,3}$", required=False,
                                    help_text="ISO 3166-2 code (streams only; class analytics are by country).")
    segment = serializers.RegexField(r"^[a-z_]{1,16}$", required=False,
                                     help_text="anonymous / signed_in / member (streams); student / teacher / ta "
                                               "(classes).")
    grade = serializers.RegexField(r"^[A-Za-z0-9_-]{1,16}$", required=False)
    group_by = serializers.ChoiceField(choices=selectors.GROUPS, required=False)

    def validate(self, attrs):
        end = attrs.get("end") or timezone.now()
        start = attrs.get("start") or end - dt.timedelta(hours=1)
        if start >= end:
            raise serializers.ValidationError({"start": ["Must be before end."]})
        if end - start > MAX_RANGE:
            raise serializers.ValidationError({"start": [f"The range may span at most {MAX_RANGE.days} days."]})
        attrs["start"], attrs["end"] = start, end
        return attrs


class SliceRowOut(serializers.Serializer):
    bucket = serializers.DateTimeField()
    kind = serializers.CharField()
    group = serializers.CharField(allow_null=True)
    count = serializers.IntegerField(allow_null=True, help_text="null when suppressed (a small group).")
    value_avg = serializers.FloatField(allow_null=True, help_text="Mean value (chat: sentiment in [-1, 1]).")
    suppressed = serializers.BooleanField()


class SliceTotalOut(serializers.Serializer):
    kind = serializers.CharField()
    group = serializers.CharField(allow_null=True)
    count = serializers.IntegerField(allow_null=True)
    value_avg = serializers.FloatField(allow_null=True)
    suppressed = serializers.BooleanField()


class SliceOut(serializers.Serializer):
    scope = serializers.CharField()
    scope_id = serializers.IntegerField()
    window = serializers.IntegerField(help_text="Bucket width in seconds (the coarsest that fits the range).")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.CharField(allow_null=True)
    rows = SliceRowOut(many=True)
    totals = SliceTotalOut(many=True)


class PipelineOut(serializers.Serializer):
    stream_length = serializers.IntegerField()
    buffer_max = serializers.IntegerField()
    flush_lag_seconds = serializers.FloatField()
    last_flush_at = serializers.DateTimeField(allow_null=True)
    last_batch_applied_at = serializers.DateTimeField(allow_null=True)
    overflow = serializers.DictField(child=serializers.IntegerField())
    overflow_total = serializers.IntegerField()
    windows = serializers.ListField(child=serializers.IntegerField())
    webhooks = serializers.DictField(child=serializers.IntegerField())
