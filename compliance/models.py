"""Compliance: the district API's clients now; FERPA access records, COPPA consent and retention next."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def _client_ref() -> str:
    return secrets.token_hex(8)


class DistrictAPIClient(models.Model):
    """An OAuth2 client-credentials application that acts for one district in the REST API."""

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="api_clients")
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="district_client"
    )
    name = models.CharField(max_length=200)
    reference = models.CharField(max_length=32, default=_client_ref, unique=True)
    scopes = models.CharField(
        max_length=200, default="roster.read",
        help_text="Space-separated OAuth2 scopes this client may request (roster.read roster.write "
        "results.read audit.read).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.district})"
