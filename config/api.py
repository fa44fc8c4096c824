"""REST API wiring: header-only OAuth2, the district client principal, pagination and the one error shape.

Every API error is `{"error": {"code": str, "message": str, "details": object, "request_id": str}}`
(documented in docs/api.md and in the OpenAPI schema).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from config.observability import request_id_var

logger = logging.getLogger("aula.api")


class AulaPagination(CursorPagination):
    """Stable cursor paging: rows inserted while a client pages never shift or repeat pages."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "id"


class DistrictClientThrottle(SimpleRateThrottle):
    """Per API client rate limit; counters live in the shared Redis cache, so every process agrees."""

    scope = "district_client"

    def get_cache_key(self, request, view):
        token = getattr(request, "auth", None)
        app_id = getattr(getattr(token, "application", None), "pk", None)
        if app_id is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": f"app{app_id}"}


def error_body(code: str, message: str, details=None, *, status_code: int) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {},
                      "request_id": request_id_var.get()}}


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, DjangoValidationError):
        # A service refused the input (same rule as on the socket): 400 invalid, never a 500.
        exc = exceptions.ValidationError({"non_field_errors": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error")
        return Response(error_body("server_error", "Internal server error.", status_code=500),
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "invalid", "The request is not valid.", response.data
    else:
        detail = getattr(exc, "detail", "")
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        message, details = str(detail), {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retry_after": int(exc.wait + 0.999)}
    response.data = error_body(str(code), message, details, status_code=response.status_code)
    return response


def json_error(code: str, message: str, status_code: int) -> JsonResponse:
    """The same shape for non-DRF API responses (404 on an unknown /api/ URL, 500)."""
    return JsonResponse(error_body(code, message, status_code=status_code), status=status_code)
