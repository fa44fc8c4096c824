"""Exam authoring and accommodations for school staff and teachers with admin access (tenant-scoped)."""

from django.contrib import admin, messages

from classrooms.admin import TenantAdmin, staff_scope
from classrooms.services import _check_staff
from exams import services
from exams.models import Accommodation, Attempt, Exam, GradeSync, Question, QuestionBank, Section


class SectionInline(admin.TabularInline):
    model = Section
    extra = 0
    fields = ["position", "title", "questions", "draw_bank", "draw_count"]
    filter_horizontal = ["questions"]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        ids = staff_scope(request)
        if db_field.name == "questions" and ids is not None:
            kwargs["queryset"] = Question.objects.filter(institution_id__in=ids)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = staff_scope(request)
        if db_field.name == "draw_bank" and ids is not None:
            kwargs["queryset"] = QuestionBank.objects.filter(institution_id__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Exam)
class ExamAdmin(TenantAdmin):
    list_display = ["title", "course", "status", "opens_at", "closes_at", "time_limit_minutes", "expiry_policy"]
    list_filter = ["status", "institution"]
    search_fields = ["title", "course__code"]
    autocomplete_fields = ["course"]
    exclude = ["institution", "grades_released_at"]
    inlines = [SectionInline]
    actions = ["precreate_attempts"]

    def save_model(self, request, obj, form, change):
        _check_staff(request.user, obj.course.institution_id)
        obj.institution_id = obj.course.institution_id
        obj.full_clean()
        obj.save()
        for warning in services.close_cut_warnings(obj):
            self.message_user(request, f"{warning['name']} needs {warning['needs_minutes']:.0f} minutes but the "
                              f"window is {warning['window_minutes']:.0f}: extend the close for them.",
                              messages.WARNING)

    @admin.action(description="Pre-create attempts for every enrolled student")
    def precreate_attempts(self, request, queryset):
        total = sum(services.attempts_precreate(exam=exam) for exam in queryset)
        self.message_user(request, f"Created {total} attempts.", messages.SUCCESS)


@admin.register(QuestionBank)
class QuestionBankAdmin(TenantAdmin):
    list_display = ["title", "course"]
    search_fields = ["title"]
    autocomplete_fields = ["course"]
    exclude = ["institution"]

    def save_model(self, request, obj, form, change):
        _check_staff(request.user, obj.course.institution_id)
        obj.institution_id = obj.course.institution_id
        obj.save()


@admin.register(Question)
class QuestionAdmin(TenantAdmin):
    list_display = ["prompt", "kind", "bank", "points"]
    list_filter = ["kind", "bank"]
    search_fields = ["prompt"]
    exclude = ["institution"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = staff_scope(request)
        if db_field.name == "bank" and ids is not None:
            kwargs["queryset"] = QuestionBank.objects.filter(institution_id__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        _check_staff(request.user, obj.bank.institution_id)
        if change:
            obj.institution_id = obj.bank.institution_id
            obj.full_clean()
            obj.save()
            return
        created = services.question_create(bank=obj.bank, kind=obj.kind, prompt=obj.prompt, options=obj.options,
                                           correct=obj.correct, numeric_answer=obj.numeric_answer,
                                           numeric_tolerance=obj.numeric_tolerance, points=obj.points)
        obj.pk = created.pk


@admin.register(Accommodation)
class AccommodationAdmin(TenantAdmin):
    list_display = ["student", "time_multiplier", "extra_minutes", "institution"]
    list_filter = ["institution"]
    search_fields = ["student__email", "student__display_name"]
    autocomplete_fields = ["student"]

    def save_model(self, request, obj, form, change):
        services.accommodation_set(student=obj.student, institution_id=obj.institution_id,
                                   time_multiplier=obj.time_multiplier, extra_minutes=obj.extra_minutes,
                                   note=obj.note, actor=request.user)


@admin.register(Attempt)
class AttemptAdmin(TenantAdmin):
    """Read-only: attempts change only through the exam services (start, save, submit, finalise)."""

    list_display = ["exam", "student", "number", "state", "deadline", "finished_at", "finish_reason", "score"]
    list_filter = ["state", "institution"]
    search_fields = ["student__email", "student__display_name", "exam__title"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(GradeSync)
class GradeSyncAdmin(TenantAdmin):
    list_display = ["student", "attempt", "session", "transport", "status", "tries", "last_error", "next_try_at",
                    "delivered_at"]
    list_filter = ["status", "institution"]
    list_select_related = ["student"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
