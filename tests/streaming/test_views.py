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
