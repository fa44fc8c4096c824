from django.urls import path

from compliance.api import aula, oneroster, views

ONEROSTER = "ims/oneroster/rostering/v1p2"

urlpatterns = [
    path("schools/", views.SchoolList.as_view(), name="api-school-list"),
    path("schools/<int:pk>/", views.SchoolDetail.as_view(), name="api-school-detail"),
    path("courses/", views.CourseList.as_view(), name="api-course-list"),
    path("courses/<int:pk>/", views.CourseDetail.as_view(), name="api-course-detail"),
    # OneRoster 1.2 rostering (no trailing slash, as OneRoster clients call them)
    *[route for collection, list_view, detail_view in oneroster.RESOURCES for route in (
        path(f"{ONEROSTER}/{collection}", list_view.as_view(), name=f"oneroster-{collection}-list"),
        path(f"{ONEROSTER}/{collection}/<str:sourced_id>", detail_view.as_view(),
             name=f"oneroster-{collection}-detail"),
    )],
    path(f"{ONEROSTER}/import", views.RosterImport.as_view(), name="oneroster-import"),
    # Aula's own resources
    path("sessions/", aula.LiveSessionList.as_view(), name="api-session-list"),
    path("sessions/<int:pk>/", aula.LiveSessionDetail.as_view(), name="api-session-detail"),
    path("sessions/<int:pk>/attendance/", aula.AttendanceList.as_view(), name="api-session-attendance"),
    path("results/", aula.ResultList.as_view(), name="api-result-list"),
    path("audit/access/", aula.AccessLogList.as_view(), name="api-audit-access"),
    path("audit/disclosures/", aula.DisclosureLogList.as_view(), name="api-audit-disclosures"),
    path("exports/", aula.ExportCreate.as_view(), name="api-export-create"),
    path("exports/<int:pk>/", aula.ExportDetail.as_view(), name="api-export-detail"),
    path("exports/<int:pk>/download/", aula.ExportDownload.as_view(), name="api-export-download"),
]
