from django.urls import path

from classrooms import views

urlpatterns = [
    path("", views.home, name="home"),
    path("sessions/<int:session_id>/", views.session_room, name="session-room"),
]
