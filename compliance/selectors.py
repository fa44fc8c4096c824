"""Reads for the district API: which client is calling, and which institutions it may see."""

from __future__ import annotations

from django.db.models import QuerySet

from classrooms.models import Institution
from classrooms.selectors import scoped_to, staff_institution_ids
from compliance.models import DistrictAPIClient


def api_client_for_token(token) -> DistrictAPIClient | None:
    app_id = getattr(token, "application_id", None)
    if app_id is None:
        return None
    return (DistrictAPIClient.objects.select_related("district")
            .filter(application_id=app_id, is_active=True).first())


def institution_ids_for_request(request) -> frozenset[int] | None:
    """The API's tenant scope: a district client sees its district's schools; a signed-in person sees the
    schools they administer (not schools where they are only a parent or teacher)."""
    cached = getattr(request, "_aula_api_scope", "unset")
    if cached != "unset":
        return cached
    token = getattr(request, "auth", None)
    if token is not None and hasattr(token, "application_id"):
        client = api_client_for_token(token)
        ids = frozenset() if client is None else frozenset(
            Institution.objects.filter(district_id=client.district_id).values_list("id", flat=True))
    else:
        ids = staff_institution_ids(request.user)
    request._aula_api_scope = ids
    return ids


def api_scoped(queryset: QuerySet, request) -> QuerySet:
    return scoped_to(queryset, institution_ids_for_request(request))
