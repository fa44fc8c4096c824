from django.urls import path

from compliance.coppa import views

urlpatterns = [
    path("", views.guardian_home, name="guardian-home"),
    path("consents/<int:consent_id>/revoke/", views.consent_revoke, name="guardian-consent-revoke"),
    path("children/<int:student_id>/deletion/", views.deletion_ask, name="guardian-deletion-ask"),
]
