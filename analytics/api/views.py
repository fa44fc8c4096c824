"""Analytics REST API: slices of a stream's or a class session's rollups, and the pipeline's status.

Aggregates only (no per-person rows). A stream's analytics: its channel's owner and moderators (signed in).
A class's: the course's teachers and TAs and the school's staff, or a district API client with `results.read`
for its district's schools. Anything else is 404 (indistinguishable from a missing object).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors
from analytics.api.serializers import PipelineOut, SliceIn, SliceOut
from compliance.api.permissions import DistrictReader, is_client_request
from compliance.selectors import institution_ids_for_request
from config.api import MAX_ID, DistrictClientThrottle, query_filters


class SignedInOrClient(BasePermission):
    """A signed-in person (checked per object), or a district client holding the view's scopes."""

    def has_permission(self, request, view):
        if is_client_request(request):
            return DistrictReader().has_permission(request, view)
        return bool(request.user and request.user.is_authenticated)


class AnalyticsView(APIView):
    permission_classes = [SignedInOrClient]
    throttle_classes = [DistrictClientThrottle]
    required_scopes = ["results.read"]
    scope = ""

    def target(self, request, object_id: int):
        raise NotImplementedError

    def get(self, request, object_id: int):
        if object_id > MAX_ID or self.target(request, object_id) is None:
            raise exceptions.NotFound()
        params = query_filters(SliceIn, request)
        try:
            result = selectors.slice_rollups(
                scope=self.scope, scope_id=object_id, start=params["start"], end=params["end"],
                kind=params.get("kind"), country=params.get("country"), region=params.get("region"),
                segment=params.get("segment"), grade=params.get("grade"), group_by=params.get("group_by"))
        except ValueError as exc:
            raise exceptions.ValidationError({str(exc): ["Class analytics are by country only."]}) from exc
        return Response(SliceOut(result).data)


@extend_schema(tags=["analytics"], parameters=[SliceIn], responses={200: SliceOut},
               summary="Counts of a stream's events over time, by geography and segment")
class StreamSlice(AnalyticsView):
    scope = "stream"

    def target(self, request, object_id: int):
        if is_client_request(request):
            return None  # streams are not school data: no district client sees them
        return selectors.stream_for(request.user, object_id)


@extend_schema(tags=["analytics"], parameters=[SliceIn], responses={200: SliceOut},
               summary="Counts of a live class's events over time (aggregate; small groups suppressed)")
class SessionSlice(AnalyticsView):
    scope = "session"

    def target(self, request, object_id: int):
        if is_client_request(request):
            return selectors.session_for(None, object_id, institution_ids=institution_ids_for_request(request))
        return selectors.session_for(request.user, object_id)


class PipelineStatus(APIView):
    """Flush lag, last flush, stream length, overflow counts per kind and webhook delivery counts (operators)."""

    permission_classes = [SignedInOrClient]
    throttle_classes = [DistrictClientThrottle]
    required_scopes = ["audit.read"]

    @extend_schema(tags=["analytics"], responses={200: PipelineOut}, summary="Health of the analytics pipeline")
    def get(self, request):
        if is_client_request(request) or not request.user.is_superuser:
            raise exceptions.PermissionDenied("Platform operators only.")
        return Response(PipelineOut(selectors.pipeline_status()).data)
