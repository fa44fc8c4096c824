"""Analytics pages: a stream's or a class session's counts over time (table + inline SVG sparkline, no script)
and the same slice as CSV (config/exports.py). Aggregates only; access as in analytics.selectors."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from analytics import selectors
from analytics.api.serializers import SliceIn
from config.exports import csv_response


def _slice(request, scope: str, object_id: int):
    target = (selectors.stream_for(request.user, object_id) if scope == "stream"
              else selectors.session_for(request.user, object_id))
    if target is None:
        raise Http404
    params = SliceIn(data=request.GET)
    if not params.is_valid():
        params = SliceIn(data={})
        params.is_valid()
    p = params.validated_data
    try:
        result = selectors.slice_rollups(scope=scope, scope_id=object_id, start=p["start"], end=p["end"],
                                         kind=p.get("kind"), country=p.get("country"), region=p.get("region"),
                                         segment=p.get("segment"), grade=p.get("grade"), group_by=p.get("group_by"))
    except ValueError:
        result = selectors.slice_rollups(scope=scope, scope_id=object_id, start=p["start"], end=p["end"])
    return target, result


def _page(request, scope: str, object_id: int):
    target, result = _slice(request, scope, object_id)
    series = []
    for total in result.totals:
        rows = [r for r in result.rows if r["kind"] == total["kind"] and r["group"] == total["group"]]
        series.append({**total, "points": selectors.sparkline_points(rows, start=result.start, end=result.end,
                                                                     window=result.window)})
    return render(request, "analytics/slice.html", {"target": target, "slice": result, "series": series,
                                                    "scope": scope, "query": request.GET.urlencode()})


def _csv(request, scope: str, object_id: int):
    _, result = _slice(request, scope, object_id)
    response, writer = csv_response(f"{scope}-{object_id}-analytics.csv",
                                    ["bucket_start", "window_seconds", "kind", "group", "count", "value_avg"])
    for row in result.rows:
        writer.writerow([row["bucket"].isoformat(), result.window, row["kind"], row["group"] or "",
                         "suppressed" if row["suppressed"] else row["count"],
                         "" if row["value_avg"] is None else row["value_avg"]])
    return response


@login_required
def stream_analytics(request, stream_id: int):
    return _page(request, "stream", stream_id)


@login_required
def stream_analytics_csv(request, stream_id: int):
    return _csv(request, "stream", stream_id)


@login_required
def session_analytics(request, session_id: int):
    return _page(request, "session", session_id)


@login_required
def session_analytics_csv(request, session_id: int):
    return _csv(request, "session", session_id)
