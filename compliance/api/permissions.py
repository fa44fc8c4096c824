"""API permissions: OAuth2 clients need the scope the view declares; signed-in users need a role."""

from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework.permissions import BasePermission

from classrooms.selectors import staff_institution_ids
from compliance import selectors


class DistrictReader(BasePermission):
    """A district API client with the view's `required_scopes`, or a signed-in district admin / staff."""

    def has_permission(self, request, view):
        if request.auth is not None and hasattr(request.auth, "application_id"):
            if selectors.api_client_for_token(request.auth) is None:
                return False
            return TokenHasScope().has_permission(request, view)
        user = request.user
        if not user or not user.is_authenticated:
            return False
        ids = staff_institution_ids(user)
        return ids is None or bool(ids)
