"""The watch page of a stream, its chat pop-out and its embeddable player (server-rendered shells).

Everything live comes over the socket (/ws/v1/streams/<id>/). The page sets the signed anonymous viewer
cookie (`aula_vid`) so tabs, pop-outs and embeds of one browser count as one viewer, and its own CSP: the
site's policy plus the player origins of AULA_STREAM_PLAYER_ORIGINS (frame-src, media-src).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_exempt

from streaming import selectors
from streaming.consumers import VIEWER_COOKIE, read_viewer_cookie, viewer_cookie_value
from streaming.services import CHAT_MAX_CHARS

HLS_SUFFIXES = (".m3u8", ".mp4", ".webm")


def player_kind(url: str) -> str:
    """`video` for HLS/MP4 sources (a <video> element), `iframe` for a provider's embed page, "" for none."""
    if not url:
        return ""
    return "video" if urlsplit(url).path.lower().endswith(HLS_SUFFIXES) else "iframe"


def watch_csp(*, embeddable: bool = False) -> str:
    players = " ".join(settings.AULA_STREAM_PLAYER_ORIGINS)
    parts = []
    for directive in settings.AULA_CSP.split(";"):
        directive = directive.strip()
        if embeddable and directive.startswith("frame-ancestors"):
            directive = "frame-ancestors *"  # the embed is made to be put on other sites
        if directive.startswith("connect-src") and players:
            directive = f"{directive} {players}"  # hls.js fetches playlists and segments from the provider
        parts.append(directive)
    parts += [f"frame-src 'self' {players}".strip(), f"media-src 'self' blob: {players}".strip()]
    return "; ".join(parts)


def _page(request, stream_id: int, template: str, *, surface: str, embeddable: bool = False):
    stream = selectors.stream_for_watch(stream_id)
    if stream is None:
        raise Http404("No such stream.")
    role = selectors.viewer_role(request.user, stream)
    response = render(request, template, {
        "stream": stream, "role": role.value, "can_moderate": role.is_staff, "signed_in": role.signed_in,
        # A recording taken down (DMCA) is not played either: the player may be its video-on-demand source.
        "player_kind": "" if stream.recording_disabled_at else player_kind(stream.player_url),
        "player_hls": not stream.recording_disabled_at and urlsplit(stream.player_url).path.lower().endswith(".m3u8"),
        "surface": surface, "chat_max": CHAT_MAX_CHARS,
        "watchable": selectors.watchable(stream),
    })
    header = "Content-Security-Policy-Report-Only" if settings.AULA_CSP_REPORT_ONLY else "Content-Security-Policy"
    response[header] = watch_csp(embeddable=embeddable)
    if not read_viewer_cookie(request.COOKIES.get(VIEWER_COOKIE)):
        response.set_cookie(VIEWER_COOKIE, viewer_cookie_value(), max_age=365 * 24 * 3600, httponly=True,
                            samesite="Lax", secure=request.is_secure())
    return response


def watch(request, stream_id: int):
    return _page(request, stream_id, "streaming/watch.html", surface="watch")


def watch_chat(request, stream_id: int):
    return _page(request, stream_id, "streaming/watch_chat.html", surface="chat")


@xframe_options_exempt
def watch_embed(request, stream_id: int):
    return _page(request, stream_id, "streaming/watch_embed.html", surface="embed", embeddable=True)
