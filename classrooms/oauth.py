"""django-oauth-toolkit scopes backend: a district client may only obtain the scopes granted to it."""

from oauth2_provider.scopes import SettingsScopes


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
