"""Moderation management pages, included at /moderation/manage/ (names in the "moderation" namespace), and the
author's notices page (`notice_urlpatterns`, included at /moderation/notices/)."""

from django.urls import path

from moderation import manage_views as views

urlpatterns = [
    path("", views.home, name="manage-home"),
    path("lists/", views.lists, name="manage-lists"),
    path("lists/<int:list_id>/", views.list_detail, name="manage-list"),
    path("lists/<int:list_id>/export.csv", views.list_export, name="manage-list-export"),
    path("try/", views.try_scope, name="manage-try"),
    path("policy/", views.policies, name="manage-policies"),
    path("policy/<str:key>/", views.policy_edit, name="manage-policy"),
    path("appeals/", views.appeals, name="manage-appeals"),
    path("items/<int:item_id>/", views.item_detail, name="manage-item"),
    path("audit/", views.audit_list, name="manage-audit"),
    path("audit/export.csv", views.audit_export, name="manage-audit-export"),
    path("audit/verify/", views.audit_verify, name="manage-audit-verify"),
    path("audit/transparency/", views.transparency, name="manage-transparency"),
]

notice_urlpatterns = [
    path("", views.notices, name="notices"),
]
