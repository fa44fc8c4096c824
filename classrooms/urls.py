from django.urls import path

from classrooms import collab_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/profile/", views.profile, name="profile"),
    path("sessions/<int:session_id>/", views.session_room, name="session-room"),
    path("sessions/<int:session_id>/attendance/", views.session_attendance, name="session-attendance"),
    path("sessions/<int:session_id>/attendance.csv", views.session_attendance_csv,
         name="session-attendance-csv"),
    path("sessions/<int:session_id>/contributions/", collab_views.collab_contributions,
         name="session-contributions"),
    path("sessions/<int:session_id>/collab/assets/", collab_views.collab_assets, name="collab-assets"),
    path("sessions/<int:session_id>/collab/assets/<int:asset_id>/", collab_views.collab_asset, name="collab-asset"),
    path("sessions/<int:session_id>/collab/<str:kind>/history/", collab_views.collab_history, name="collab-history"),
    path("sessions/<int:session_id>/collab/<str:kind>/history/<int:version_id>/", collab_views.collab_version,
         name="collab-version"),
    path("sessions/<int:session_id>/collab/<str:kind>/export.<str:fmt>", collab_views.collab_export,
         name="collab-export"),
]
