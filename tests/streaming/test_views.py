"""The watch page, its chat pop-out and embed: public, with the viewer cookie and the player CSP."""

import pytest

from streaming.consumers import VIEWER_COOKIE, read_viewer_cookie
from tests import factories

pytestmark = pytest.mark.django_db


def test_watch_page_is_public_sets_a_signed_viewer_cookie_and_allows_the_player(client, settings):
    settings.AULA_STREAM_PLAYER_ORIGINS = ["https://player.example"]
    stream = factories.stream(player_url="https://player.example/embed/1")
    response = client.get(f"/streams/{stream.pk}/")
    assert response.status_code == 200
    assert read_viewer_cookie(response.cookies[VIEWER_COOKIE].value)
    csp = response["Content-Security-Policy"]
    assert "frame-src 'self' https://player.example" in csp and "frame-ancestors 'none'" in csp
    assert b'data-testid="player"' in response.content and b"moderation" not in response.content


def test_embed_may_be_framed_and_chat_popout_renders(client):
    stream = factories.stream()
    embed = client.get(f"/streams/{stream.pk}/embed/")
    assert "frame-ancestors *" in embed["Content-Security-Policy"] and "X-Frame-Options" not in embed
    assert client.get(f"/streams/{stream.pk}/chat/").status_code == 200
    assert client.get("/streams/999999/").status_code == 404


def test_moderator_controls_only_for_staff(client):
    creator = factories.user()
    stream = factories.stream(factories.channel(owner=creator))
    client.force_login(creator)
    assert b'data-testid="moderation"' in client.get(f"/streams/{stream.pk}/").content


def test_an_hls_stream_plays_through_the_vendored_hls_js_with_the_provider_allowed_to_connect(client, settings):
    settings.AULA_STREAM_PLAYER_ORIGINS = ["https://cdn.example"]
    stream = factories.stream(player_url="https://cdn.example/live/master.m3u8")
    response = client.get(f"/streams/{stream.pk}/")
    page = response.content.decode()
    # No src for HLS: a browser without native HLS would fail on it (and report an error) before hls.js runs.
    assert 'data-src="https://cdn.example/live/master.m3u8"' in page and ' src="https://cdn.example' not in page
    assert "vendor/hls/hls.light.min.js" in page
    csp = response["Content-Security-Policy"]
    connect = next(d for d in csp.split("; ") if d.startswith("connect-src"))
    assert "https://cdn.example" in connect and csp.count("connect-src") == 1
    mp4 = client.get(f"/streams/{factories.stream(player_url='https://cdn.example/v.mp4').pk}/").content.decode()
    assert 'src="https://cdn.example/v.mp4"' in mp4 and "hls.light" not in mp4
