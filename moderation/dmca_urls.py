"""DMCA pages: the designated agent, notice and counter-notice intake, case pages (moderation/dmca.py)."""

urlpatterns: list = []
