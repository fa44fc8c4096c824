"""django-oauth-toolkit scopes backend: a district client may only obtain the scopes granted to it."""

from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import SettingsScopes
from oauth2_provider.views import TokenView


class DistrictClientScopes(SettingsScopes):
    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        allowed = super().get_available_scopes(application, request, *args, **kwargs)
        client = getattr(application, "district_client", None) if application is not None else None
        if client is None or not client.is_active:
            return []
        granted = set(client.scopes.split())
        return [s for s in allowed if s in granted]

    def get_default_scopes(self, application=None, request=None, *args, **kwargs):
        available = set(self.get_available_scopes(application, request))
        return [s for s in super().get_default_scopes(application, request) if s in available]


class DistrictClientValidator(OAuth2Validator):
    """Only active district clients authenticate at the token endpoint (a deactivated client gets no
    token at all, not merely a token without scopes)."""

    def authenticate_client(self, request, *args, **kwargs):
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        client = getattr(request.client, "district_client", None)
        return client is not None and client.is_active


class ThrottledTokenView(TokenView):
    """The token endpoint with a per-address and per-client_id attempt limit (secrets cannot be guessed
    at speed). Counters are atomic in the shared Redis cache."""

    limit = 30
    window = 60

    def post(self, request, *args, **kwargs):
        from django.core.cache import cache

        from config.api import json_error

        keys = [f"oauth-token:ip:{request.META.get('REMOTE_ADDR', '-')}"]
        client_id = request.POST.get("client_id") or _basic_client_id(request)
        if client_id:
            keys.append(f"oauth-token:client:{client_id[:100]}")
        for key in keys:
            cache.add(key, 0, self.window)
            try:
                count = cache.incr(key)
            except ValueError:
                count = 1
            if count > self.limit:
                response = json_error("throttled", "Too many token requests.", 429)
                response["Retry-After"] = str(self.window)
                return response
        return super().post(request, *args, **kwargs)


def _basic_client_id(request) -> str | None:
    import base64

    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("Basic "):
        return None
    try:
        return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
    except Exception:
        return None
