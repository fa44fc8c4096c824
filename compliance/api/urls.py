from django.urls import path

from compliance.api import views

urlpatterns = [
    path("schools/", views.SchoolList.as_view(), name="api-school-list"),
    path("schools/<int:pk>/", views.SchoolDetail.as_view(), name="api-school-detail"),
    path("courses/", views.CourseList.as_view(), name="api-course-list"),
    path("courses/<int:pk>/", views.CourseDetail.as_view(), name="api-course-detail"),
]
