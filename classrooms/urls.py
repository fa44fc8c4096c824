from django.urls import path

from classrooms import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/profile/", views.profile, name="profile"),
    path("sessions/<int:session_id>/", views.session_room, name="session-room"),
    path("sessions/<int:session_id>/attendance/", views.session_attendance, name="session-attendance"),
    path("sessions/<int:session_id>/attendance.csv", views.session_attendance_csv,
         name="session-attendance-csv"),
]
