"""Exam pages for students (list, start, attempt, result) and teachers (proctor, grading, integrity log)."""

from django.urls import path

from exams import views

urlpatterns = [
    path("exams/", views.exam_list, name="exam-list"),
    path("exams/<int:exam_id>/start/", views.exam_start, name="exam-start"),
    path("exams/<int:exam_id>/proctor/", views.exam_proctor, name="exam-proctor"),
    path("exams/<int:exam_id>/grading/", views.exam_grading, name="exam-grading"),
    path("exams/<int:exam_id>/grading/release/", views.exam_release, name="exam-release"),
    path("attempts/<int:attempt_id>/", views.attempt_page, name="attempt"),
    path("attempts/<int:attempt_id>/result/", views.attempt_result, name="attempt-result"),
    path("attempts/<int:attempt_id>/log.json", views.attempt_log, name="attempt-log"),
]
