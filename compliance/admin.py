from django.contrib import admin

from classrooms.admin import TenantAdmin
from compliance.models import DistrictAPIClient


@admin.register(DistrictAPIClient)
class DistrictAPIClientAdmin(TenantAdmin):
    tenant_field = "district__institutions__id"
    list_display = ["name", "district", "reference", "scopes", "is_active"]
    readonly_fields = ["reference"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def has_module_permission(self, request):
        return request.user.is_superuser

from compliance.coppa import admin as coppa_admin  # noqa: E402, F401  (registers the COPPA records' admin)
