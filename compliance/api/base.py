"""The base of every district API view: permission, throttle, tenant scope, and the one place where every
list page and every retrieved record passes (`records_read`), where compliance.audit records the read of
each student record (and, for a district client, the disclosure to an outside party)."""

from __future__ import annotations

from rest_framework import generics, mixins
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from compliance import selectors
from compliance.api.permissions import DistrictReader, is_client_request
from compliance.audit import AuditedAPIMixin
from config.api import DistrictClientThrottle


class DistrictAPIView(AuditedAPIMixin, generics.GenericAPIView):
    permission_classes = [DistrictReader]
    throttle_classes = [DistrictClientThrottle]
    base_scopes = ["roster.read"]
    method_scopes: dict[str, list[str]] = {}  # e.g. {"PUT": ["roster.write"]}: a write needs its own scope
    clients_only = False  # True: district clients only (sourcedIds are per district; people have no district)

    @property
    def required_scopes(self) -> list[str]:
        method = getattr(getattr(self, "request", None), "method", "GET")
        return self.method_scopes.get(method, self.base_scopes)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.clients_only and not is_client_request(request):
            raise PermissionDenied("This endpoint is for district API clients (OAuth2 client credentials).")

    def scoped(self, queryset):
        """The caller's tenant scope (compliance.selectors.api_scoped, the one mechanism)."""
        return selectors.api_scoped(queryset, self.request)

    audit_in_serializer = False  # every record passes records_read instead, serializer or not

    def records_read(self, records: list, *, many: bool = True) -> None:
        """Every record a list page or a retrieve returns passes here, once, before it is rendered: FERPA's
        access entries (and a district client's disclosure) are written here."""
        self.audit_records(records, many=many)

    def render(self, records: list) -> list[dict]:
        return self.get_serializer(records, many=True).data


class DistrictListView(mixins.ListModelMixin, DistrictAPIView):  # the mixin marks a list for the schema
    def get(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        records = list(page)
        self.records_read(records)
        return self.get_paginated_response(self.render(records))


class DistrictDetailView(DistrictAPIView):
    def get(self, request, *args, **kwargs):
        record = self.get_object()
        self.records_read([record], many=False)
        return Response(self.wrap(self.render([record])[0]))

    def wrap(self, data: dict) -> dict:
        return data
