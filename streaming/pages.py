"""Server-rendered pages: a channel (anyone), following it (signed in), notice preferences, the creator dashboard.

The dashboard page is a shell: its figures come over its socket (streaming/dashboard.py), which checks the
same permission again at connect and periodically.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from streaming import dashboard, notifications
from streaming.models import Channel, Follow, Stream

PAST_STREAMS = 20


@require_GET
def channel_page(request, slug: str):
    channel = get_object_or_404(Channel.objects.select_related("owner"), slug=slug)
    streams = channel.streams.all()
    live = [(s, notifications.stream_watch_url(s)) for s in streams.filter(status=Stream.Status.LIVE)
            .order_by("-started_at", "-id")]
    upcoming = streams.filter(status=Stream.Status.SCHEDULED).order_by("scheduled_start", "id")
    past = streams.filter(status=Stream.Status.ENDED).order_by("-ended_at", "-id")[:PAST_STREAMS]
    user = request.user
    staff_ids = dashboard.channel_staff_ids(channel) if user.is_authenticated else set()
    return render(request, "streaming/channel.html", {
        "channel": channel,
        "live": live,
        "upcoming": upcoming,
        "past": past,
        "follower_count": notifications.follower_count(channel),
        "following": notifications.is_following(channel, user),
        "is_staff_of_channel": user.is_authenticated and user.pk in staff_ids,
    })


@login_required
@require_POST
def channel_follow(request, slug: str):
    channel = get_object_or_404(Channel, slug=slug)
    action = request.POST.get("action")
    if action == "follow":
        notifications.follow_add(channel=channel, user=request.user)
        messages.success(request, f"You follow {channel.title}.")
    elif action == "unfollow":
        notifications.follow_remove(channel=channel, user=request.user)
        messages.success(request, f"You no longer follow {channel.title}.")
    else:
        messages.error(request, "Choose follow or unfollow.")
    return redirect("stream-channel", slug=channel.slug)


@login_required
@require_http_methods(["GET", "POST"])
def notification_preferences(request):
    follows = list(Follow.objects.filter(user=request.user).select_related("channel").order_by("channel__title"))
    if request.method == "POST":
        notifications.preferences_set(user=request.user, live_in_page=request.POST.get("live_in_page") == "on",
                                      live_email=request.POST.get("live_email") == "on")
        notified = set(request.POST.getlist("notify"))
        for follow in follows:  # only the user's own follows can be changed here
            wanted = str(follow.channel_id) in notified
            if follow.notify != wanted:
                notifications.follow_notify_set(channel=follow.channel, user=request.user, notify=wanted)
        messages.success(request, "Your notification settings are saved.")
        return redirect("stream-notification-preferences")
    return render(request, "streaming/notifications.html", {
        "prefs": notifications.preferences_of(request.user),
        "follows": follows,
    })


@login_required
@require_GET
def dashboard_page(request, stream_id: int):
    stream, allowed = dashboard.dashboard_access(request.user, stream_id)
    if stream is None:
        raise Http404("No such stream")
    if not allowed:  # the socket refuses the same people with 4403
        raise PermissionDenied("Only the creator and the channel's moderators see this dashboard.")
    return render(request, "streaming/dashboard.html", {
        "stream": stream,
        "channel": stream.channel,
        "tick_seconds": settings.AULA_STREAM_DASHBOARD_TICK_SECONDS,
    })
