from django.contrib import admin

from classrooms.admin import TenantAdmin
from exams.models import Exam


@admin.register(Exam)
class ExamAdmin(TenantAdmin):
    list_display = ["title", "course", "status", "opens_at", "closes_at", "time_limit_minutes"]
    list_filter = ["status", "institution"]
    search_fields = ["title", "course__code"]
    autocomplete_fields = ["course"]
    exclude = ["institution"]

    def save_model(self, request, obj, form, change):
        from classrooms.services import _check_staff

        _check_staff(request.user, obj.course.institution_id)
        obj.institution_id = obj.course.institution_id
        obj.full_clean()
        obj.save()
