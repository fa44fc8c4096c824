"""DMCA pages: the designated agent, notice and counter-notice intake, case pages (moderation/dmca.py)."""

from django.urls import path

from moderation import dmca_views

urlpatterns: list = [
    path("", dmca_views.agent_page, name="dmca-agent"),
    path("notice/", dmca_views.notice_form, name="dmca-notice"),
    path("cases/<int:case_id>/", dmca_views.case_page, name="dmca-case"),
    path("cases/<int:case_id>/counter/", dmca_views.counter_form, name="dmca-counter"),
    path("cases/<int:case_id>/court-action/", dmca_views.court_action, name="dmca-court-action"),
]
