"""The channel page, following, the notification settings page and the dashboard page's access rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streaming import notifications
from streaming import services as streaming_services
from streaming.models import ChannelRole, Follow, Stream
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def channel():
    creator = factories.user("creator")
    ch = streaming_services.channel_upsert(owner=creator, slug="garden", title="Garden <script>x</script>",
                                           description="Seeds & soil")
    live = streaming_services.stream_upsert(channel=ch, title="Planting now")
    live.status, live.started_at = Stream.Status.LIVE, timezone.now()
    live.save()
    streaming_services.stream_upsert(channel=ch, title="Autumn pruning",
                                     scheduled_start=timezone.now() + dt.timedelta(days=2))
    past = streaming_services.stream_upsert(channel=ch, title="Compost 101")
    past.status, past.ended_at = Stream.Status.ENDED, timezone.now() - dt.timedelta(days=1)
    past.recording_url = "https://video.example.test/compost"
    past.save()
    return ch


def test_anyone_sees_the_channel_its_streams_and_follower_count(client, channel):
    notifications.follow_add(channel=channel, user=factories.user())
    response = client.get(reverse("stream-channel", args=["garden"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Garden &lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html
    assert "Seeds &amp; soil" in html
    assert 'data-testid="follower-count">1<' in html
    assert "Planting now" in html and "Autumn pruning" in html and "Compost 101" in html
    assert 'href="https://video.example.test/compost"' in html
    assert 'data-testid="sign-in-to-follow"' in html and 'data-testid="follow"' not in html
    assert "dashboard-link" not in html
    assert client.get(reverse("stream-channel", args=["nope"])).status_code == 404


def test_follow_and_unfollow_need_sign_in_and_post(client, channel):
    url = reverse("stream-channel-follow", args=["garden"])
    response = client.post(url, {"action": "follow"})
    assert response.status_code == 302 and reverse("login") in response["Location"]
    fan = factories.user()
    client.force_login(fan)
    assert client.get(url).status_code == 405
    client.post(url, {"action": "follow"})
    client.post(url, {"action": "follow"})  # twice: still one follow
    assert Follow.objects.filter(channel=channel, user=fan).count() == 1
    page = client.get(reverse("stream-channel", args=["garden"])).content.decode()
    assert 'data-testid="unfollow"' in page and 'data-testid="follower-count">1<' in page
    client.post(url, {"action": "unfollow"})
    assert not Follow.objects.filter(channel=channel, user=fan).exists()


def test_follow_is_csrf_protected(channel):
    fan = factories.user()
    client = Client(enforce_csrf_checks=True)
    client.force_login(fan)
    assert client.post(reverse("stream-channel-follow", args=["garden"]), {"action": "follow"}).status_code == 403
    assert not Follow.objects.exists()


def test_notification_settings_page_saves_preferences_and_per_channel_mutes(client, channel):
    other = streaming_services.channel_upsert(owner=factories.user(), slug="other", title="Other")
    fan, stranger = factories.user(), factories.user()
    notifications.follow_add(channel=channel, user=fan)
    notifications.follow_add(channel=other, user=fan)
    notifications.follow_add(channel=other, user=stranger)
    url = reverse("stream-notification-preferences")
    assert client.get(url).status_code == 302  # signed in only
    client.force_login(fan)
    page = client.get(url).content.decode()
    assert "Garden &lt;script&gt;" in page and 'name="live_email"' in page
    response = client.post(url, {"live_in_page": "on", "notify": [str(other.pk)]})
    assert response.status_code == 302
    prefs = notifications.preferences_of(fan)
    assert (prefs.live_in_page, prefs.live_email) == (True, False)
    assert dict(Follow.objects.filter(user=fan).values_list("channel__slug", "notify")) == {"garden": False,
                                                                                            "other": True}
    client.post(url, {"notify": []})
    assert Follow.objects.get(user=stranger).notify is True  # only the user's own follows change


def test_dashboard_page_is_for_the_creator_and_moderators(client, channel):
    stream = channel.streams.get(title="Planting now")
    url = reverse("stream-dashboard", args=[stream.pk])
    assert client.get(url).status_code == 302
    moderator, member, viewer = factories.user(), factories.user(), factories.user()
    streaming_services.channel_role_grant(channel=channel, user=moderator, role=ChannelRole.Kind.MODERATOR)
    streaming_services.channel_role_grant(channel=channel, user=member, role=ChannelRole.Kind.MEMBER)
    for person, status in ((channel.owner, 200), (moderator, 200), (member, 403), (viewer, 403)):
        client.force_login(person)
        assert client.get(url).status_code == status, person
    client.force_login(channel.owner)
    assert client.get(reverse("stream-dashboard", args=[stream.pk + 999])).status_code == 404
    page = client.get(url).content.decode()
    assert "uPlot.iife.min.js" in page and f'data-stream-id="{stream.pk}"' in page
    assert "dashboard-link" in client.get(reverse("stream-channel", args=["garden"])).content.decode()


def test_signed_in_pages_carry_the_live_notice_widget(client, channel):
    client.force_login(factories.user())
    page = client.get(reverse("stream-channel", args=["garden"])).content.decode()
    assert 'data-live-notices="on"' in page and "streaming/notifications.js" in page
    client.logout()
    assert "streaming/notifications.js" not in client.get(reverse("stream-channel", args=["garden"])).content.decode()
