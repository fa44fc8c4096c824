"""REST API wiring: header-only OAuth2, the district client principal, pagination and the one error shape.

Every API error is `{"error": {"code": str, "message": str, "details": object, "request_id": str}}`
(documented in docs/api.md and in the OpenAPI schema).
"""

from __future__ import annotations

import logging
import math
import time

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from config.observability import request_id_var

logger = logging.getLogger("aula.api")


class AulaPagination(CursorPagination):
    """Stable cursor paging: rows inserted while a client pages never shift or repeat pages."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "id"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise exceptions.ValidationError({"limit": [f"An integer from 1 to {self.max_page_size}."]})
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters


MAX_ID = 2**63 - 1


def id_parameter(name: str, description: str = ""):
    """An integer id query parameter, as the schema documents it (the filter serializers enforce the same)."""
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(name, {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                            description=description or f"Only rows of this {name} (an id of your district).")


def query_filters(serializer_class, request) -> dict:
    """Validate query parameters with a serializer; a parameter that is present but empty is invalid too."""
    empty = [name for name in serializer_class().fields if request.query_params.get(name) == ""]
    if empty:
        raise exceptions.ValidationError({name: ["This parameter may not be empty."] for name in empty})
    filters = serializer_class(data=request.query_params)
    filters.is_valid(raise_exception=True)
    return filters.validated_data


class DistrictClientThrottle(BaseThrottle):
    """Per API client rate limit, `AULA_API_RATE` requests per window.

    A fixed window counted with one atomic Redis INCR per request: concurrent requests of one client, in any
    number of processes, can never pass more than the limit (DRF's SimpleRateThrottle reads, appends and
    writes back a history list, so concurrent requests overwrite each other and slip through)."""

    scope = "district_client"
    rate: str | None = None  # "<n>/<s|min|hour|day>"; None: REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    periods = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def limits(self) -> tuple[int, int]:
        from django.conf import settings

        rate = self.rate or settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][self.scope]
        count, period = rate.split("/")
        return int(count), self.periods[period[0]]

    def allow_request(self, request, view) -> bool:
        from django.core.cache import cache

        token = getattr(request, "auth", None)
        app_id = getattr(token, "application_id", None)
        if app_id is None:
            return True  # signed-in people are limited by their login, not per client
        limit, period = self.limits()
        now = time.time()
        window = int(now // period)
        key = f"throttle:{self.scope}:app{app_id}:{period}:{window}"
        cache.add(key, 0, period + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, period + 1)
            count = 1
        self._wait = (window + 1) * period - now
        return count <= limit

    def wait(self) -> float:
        return getattr(self, "_wait", None)


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
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict")
                                         else {"non_field_errors": exc.messages})
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
            retry_after = max(1, math.ceil(exc.wait))  # DRF's header truncates: "0" would invite a retry storm
            details = {"retry_after": retry_after}
            response["Retry-After"] = str(retry_after)
    response.data = error_body(str(code), message, details, status_code=response.status_code)
    return response


def json_error(code: str, message: str, status_code: int) -> JsonResponse:
    """The same shape for non-DRF API responses (404 on an unknown /api/ URL, 500)."""
    return JsonResponse(error_body(code, message, status_code=status_code), status=status_code)
