"""API permissions and the caller's tenant scope: OAuth2 clients need the scope the view declares (granted
to the client now, not only when the token was issued); signed-in users need a staff role, and read only
the schools they administer."""

from __future__ import annotations

from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework.permissions import BasePermission

from classrooms.selectors import staff_institution_ids
from compliance import selectors


def is_client_request(request) -> bool:
    """True when the caller authenticated with an OAuth2 access token (a district client)."""
    return request.auth is not None and hasattr(request.auth, "application_id")


def caller_institution_ids(request) -> frozenset[int] | None:
    return selectors.institution_ids_for_request(request)


def caller_scoped(queryset, request):
    return selectors.api_scoped(queryset, request)


class DistrictReader(BasePermission):
    """A district API client with the view's `required_scopes`, or a signed-in district admin / staff."""

    def has_permission(self, request, view):
        if is_client_request(request):
            client = selectors.api_client_for_token(request.auth)
            if client is None:
                return False
            # A scope withdrawn from the client stops its already-issued tokens too.
            if not set(getattr(view, "required_scopes", [])) <= set(client.scopes.split()):
                return False
            return TokenHasScope().has_permission(request, view)
        user = request.user
        if not user or not user.is_authenticated:
            return False
        ids = staff_institution_ids(user)
        return ids is None or bool(ids)
